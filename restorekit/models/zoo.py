"""Model zoo: known teacher checkpoints declared as data, with verified, resumable downloads.

Torch-free (stdlib; rich is imported only to draw the progress bar). Files live in
``<cache>/models/`` where ``<cache>`` is ``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``,
else ``~/.cache/restorekit``. Nothing is installed unless its sha256 matches the registry; an
entry without a published hash installs only with ``trust_unverified=True``.
"""

from __future__ import annotations

import difflib
import http.client
import hashlib
import json
import os
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from restorekit.core.errors import BadInputError
from restorekit.core.files import atomic_write, atomic_write_text, remove_abandoned_temps, sha256_file
from restorekit.core.targets import TASKS

#: Tasks the zoo holds teachers for: every task but the scratch detector, which ships built in.
ZOO_TASKS = tuple(t for t in TASKS if t != "scratch")
_CHUNK = 1 << 20
_USER_AGENT = "restorekit-zoo/1"


@dataclass(frozen=True)
class ZooEntry:
    """One downloadable checkpoint and everything a user must know before using it."""

    name: str
    filename: str
    url: str
    sha256: str | None  # hex sha256 of the file at ``url``; None = no published hash found
    size: int | None  # bytes, when known
    licence: str
    non_commercial: bool
    task: str  # one of ZOO_TASKS
    arch: str
    scale: int
    io: str  # io contract: input size rules, value range, colour order, checkpoint layout
    description: str
    sha256_source: str = ""  # where the hash (and size) were confirmed
    also_sha256: tuple[str, ...] = ()  # other byte-level copies of the same weights accepted too

    @property
    def accepted_sha256(self) -> tuple[str, ...]:
        """Every sha256 accepted for this entry's file."""
        return tuple(h for h in (self.sha256, *self.also_sha256) if h)


_ESRGAN = "https://github.com/xinntao/Real-ESRGAN/releases/download"
_RRDB_IO = "RGB float in [0, 1], NCHW; state dict key 'params_ema'"
_COMPACT_IO = "RGB float in [0, 1], NCHW, any size; state dict key 'params'"
_FACE_IO = ("fixed 1x3x512x512 face aligned to the FFHQ 5-point template; RGB normalised to [-1, 1] "
            "in and out; state dict key 'params_ema'")
# License_GFPGAN.txt: Apache-2.0 "except for the third-party components", which include StyleGAN2
# (NVIDIA licence, section 3.3: non-commercial use only) and DFDNet (CC BY-NC-SA 4.0).
_GFPGAN_LICENCE = ("Apache-2.0 with non-commercial third-party parts; StyleGAN2 code: NVIDIA licence "
                   "(non-commercial use only), DFDNet code: CC BY-NC-SA 4.0; review before commercial use")
_DDCOLOR_IO = ("grey image resized to 512x512, given as RGB float in [0, 1]; predicts Lab a/b at 512x512, "
               "upsample bilinear and merge with full-resolution L (spandrel: grey in, RGB out)")
_DDCOLOR_LICENCE = "Apache-2.0 (piddnad/DDColor code and Hugging Face model card); trained on ImageNet"

REGISTRY: dict[str, ZooEntry] = {e.name: e for e in (
    ZooEntry(
        name="RealESRGAN_x4plus", filename="RealESRGAN_x4plus.pth",
        url=f"{_ESRGAN}/v0.1.0/RealESRGAN_x4plus.pth",
        # sha256 + size: AUR python-realesrgan PKGBUILD (archlinux/aur, sha256sums) and several
        # independent download manifests found with the search tool; size from one of them.
        sha256="4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1", size=67040989,
        sha256_source="AUR python-realesrgan PKGBUILD sha256sums; independent download manifests",
        licence="BSD-3-Clause", non_commercial=False, task="sr", arch="RRDBNet (ESRGAN, 23 blocks)",
        scale=4, io=f"{_RRDB_IO}; any size",
        description="Real-ESRGAN x4, general real-world photos (heavy RRDB teacher).",
    ),
    ZooEntry(
        name="RealESRGAN_x2plus", filename="RealESRGAN_x2plus.pth",
        url=f"{_ESRGAN}/v0.2.1/RealESRGAN_x2plus.pth",
        # sha256: AUR python-realesrgan PKGBUILD 0.2.3.0/0.3.0 (archlinux/aur) + download manifests;
        # size: download manifests (67061725 bytes).
        sha256="49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb", size=67061725,
        sha256_source="AUR python-realesrgan PKGBUILD sha256sums; independent download manifests",
        licence="BSD-3-Clause", non_commercial=False, task="sr", arch="RRDBNet (ESRGAN, pixel-unshuffle x2)",
        scale=2, io=f"{_RRDB_IO}; H and W multiple of 4 (pixel unshuffle)",
        description="Real-ESRGAN x2, general real-world photos.",
    ),
    ZooEntry(
        name="realesr-general-x4v3", filename="realesr-general-x4v3.pth",
        url=f"{_ESRGAN}/v0.2.5.0/realesr-general-x4v3.pth",
        # sha256: AUR python-realesrgan PKGBUILD 0.3.0 (archlinux/aur) + many manifests; size 4885111.
        sha256="8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292", size=4885111,
        sha256_source="AUR python-realesrgan 0.3.0 PKGBUILD sha256sums; independent download manifests",
        licence="BSD-3-Clause", non_commercial=False, task="sr", arch="SRVGGNetCompact (64 feats, 32 convs, PReLU)",
        scale=4, io=_COMPACT_IO,
        description="Real-ESRGAN compact general model (small, mobile-friendly teacher).",
    ),
    ZooEntry(
        name="realesr-animevideov3", filename="realesr-animevideov3.pth",
        url=f"{_ESRGAN}/v0.2.5.0/realesr-animevideov3.pth",
        # sha256 of the official release asset (2504012 bytes): AUR python-realesrgan 0.3.0 PKGBUILD
        # (archlinux/aur) and TensoRaws/ccrestoration realesrgan_config.py.
        sha256="b8a8376811077954d82ca3fcf476f1ac3da3e8a68a4f4d71363008000a18b75d", size=2504012,
        # ../shared/weights/realesr-animevideov3.pth (2334339 bytes, a re-packed zip of the same
        # checkpoint): its sha256 is the authoritative one in ../shared/README.md.
        also_sha256=("4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932",),
        sha256_source=("release asset: AUR python-realesrgan 0.3.0 PKGBUILD, TensoRaws/ccrestoration; "
                       "re-packed copy: ../shared/README.md"),
        licence="BSD-3-Clause", non_commercial=False, task="sr", arch="SRVGGNetCompact (64 feats, 16 convs, PReLU)",
        scale=4, io=_COMPACT_IO,
        description="Real-ESRGAN compact anime/video model (0.62 M params; the project's reference teacher).",
    ),
    ZooEntry(
        name="GFPGANv1.3", filename="GFPGANv1.3.pth",
        url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.3.pth",
        # sha256: AUR python-gfpgan PKGBUILD sha256sums + several manifests; size 348632874 (manifests).
        sha256="c953a88f2727c85c3d9ae72e2bd4846bbaf59fe6972ad94130e23e7017524a70", size=348632874,
        sha256_source="AUR python-gfpgan PKGBUILD sha256sums; independent download manifests",
        licence=_GFPGAN_LICENCE, non_commercial=True, task="face", arch="GFPGANv1Clean (StyleGAN2 prior)",
        scale=1, io=_FACE_IO,
        description="GFPGAN v1.3 blind face restoration (natural-looking results).",
    ),
    ZooEntry(
        name="GFPGANv1.4", filename="GFPGANv1.4.pth",
        url="https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
        # sha256 + size 348632874: several independent download manifests (search tool, code corpus).
        sha256="e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad", size=348632874,
        sha256_source="independent download manifests (several projects agree)",
        licence=_GFPGAN_LICENCE, non_commercial=True, task="face", arch="GFPGANv1Clean (StyleGAN2 prior)",
        scale=1, io=_FACE_IO,
        description="GFPGAN v1.4 blind face restoration (more detail than v1.3).",
    ),
    ZooEntry(
        name="CodeFormer", filename="codeformer.pth",
        url="https://github.com/sczhou/CodeFormer/releases/download/v0.1.0/codeformer.pth",
        # sha256: several independent download manifests; size 376637898 (manifests).
        sha256="1009e537e0c2a07d4cabce6355f53cb66767cd4b4297ec7a4a64ca4b8a5684b7", size=376637898,
        sha256_source="independent download manifests (several projects agree)",
        licence="S-Lab License 1.0 (NTU): non-commercial use only", non_commercial=True, task="face",
        arch="CodeFormer (VQGAN codebook + transformer)", scale=1,
        io=f"{_FACE_IO}; extra input: fidelity weight w in [0, 1]",
        description="CodeFormer face restoration with a fidelity/quality dial.",
    ),
    ZooEntry(
        name="ddcolor_paper", filename="ddcolor_paper.pth",
        url="https://huggingface.co/piddnad/DDColor-models/resolve/main/ddcolor_paper.pth",
        # sha256: Hugging Face LFS pointer of piddnad/DDColor-models (blob page, commit 1969bc5).
        sha256="789781789db1bafc2165e1cf9658580f871cce64a81901ec49127877813f10b9", size=None,  # ~912 MB
        sha256_source="Hugging Face piddnad/DDColor-models LFS pointer (blob page)",
        licence=_DDCOLOR_LICENCE, non_commercial=False, task="colorize",
        arch="DDColor-L (ConvNeXt-L encoder, dual decoders)", scale=1, io=_DDCOLOR_IO,
        description="DDColor large, the paper model (ImageNet-trained colorization).",
    ),
    ZooEntry(
        name="ddcolor_paper_tiny", filename="ddcolor_paper_tiny.pth",
        url="https://huggingface.co/piddnad/DDColor-models/resolve/main/ddcolor_paper_tiny.pth",
        # sha256 + size: Hugging Face LFS pointer of piddnad/DDColor-models (commit 8c3ddc6).
        sha256="81dd643904f4664c3718513e3320ae3db0c567f0d3e18398606659adee7bfc17", size=220393145,
        sha256_source="Hugging Face piddnad/DDColor-models LFS pointer (commit 8c3ddc6)",
        licence=_DDCOLOR_LICENCE, non_commercial=False, task="colorize",
        arch="DDColor-T (ConvNeXt-T encoder, dual decoders)", scale=1, io=_DDCOLOR_IO,
        description="DDColor tiny (paper) colorization; the lighter teacher.",
    ),
    ZooEntry(
        name="big-lama", filename="big-lama.pt",
        # advimman/lama publishes a training-checkpoint zip; this is lama-cleaner's TorchScript export
        # of big-lama, the file spandrel's LaMa support is tested with.
        url="https://github.com/Sanster/models/releases/download/add_big_lama/big-lama.pt",
        # sha256 + size: independent download manifests; they note it matches lama-cleaner's pinned
        # md5 e3aa4aaa15225a33ec84f9f4bc47e500.
        sha256="344c77bbcb158f17dd143070d1e789f38a66c04202311ae3a258ef66667a9ea9", size=205669692,
        sha256_source="independent download manifests (matching lama-cleaner's pinned md5)",
        licence="Apache-2.0 (advimman/lama); trained on Places2", non_commercial=False, task="inpaint",
        arch="LaMa (big-lama, fast Fourier convolutions)", scale=1,
        io=("image RGB float in [0, 1] + 1-channel mask (1 = hole); H and W multiple of 8; "
            "TorchScript archive (spandrel reads its state dict)"),
        description="LaMa big-lama inpainting for scratches and tears.",
    ),
    ZooEntry(
        name="retinaface_mobilenet0.25", filename="retinaface_mobilenet0.25.pth",
        # biubug6's Face-Detector-1MB-with-landmark weights/mobilenet0.25_Final.pth (pinned commit).
        # facexlib's detection_mobilenet0.25_Final.pth has the same size but another sha256
        # (2979b33f..., Hugging Face LFS mirrors), so it is not this file.
        url=("https://github.com/biubug6/Face-Detector-1MB-with-landmark/raw/"
             "7f49cebe8c46c0d36debf2f4776dff35dd59a071/weights/mobilenet0.25_Final.pth"),
        # sha256: ../shared/README.md (authoritative for this project); size: ../shared copy.
        sha256="ed6fa7d45a5179f03cb5ce82c73b0c6711372968e53782e88395acee88d319e1", size=1789735,
        sha256_source="../shared/README.md",
        licence="MIT (biubug6)", non_commercial=False, task="detect", arch="RetinaFace (MobileNet-0.25)",
        scale=1, io=("any size; BGR float 0-255 minus mean (104, 117, 123), NCHW; outputs boxes, scores and "
                     "5 landmarks; state dict keys body.*, fpn.*, ssh1..3.*, *Head.*"),
        description="RetinaFace face detector with 5 landmarks (0.43 M params).",
    ),
    ZooEntry(
        name="SwinIR-M_realSR_x4_GAN", filename="003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth",
        url=("https://github.com/JingyunLiang/SwinIR/releases/download/v0.0/"
             "003_realSR_BSRGAN_DFO_s64w8_SwinIR-M_x4_GAN.pth"),
        # sha256 + size: TensoRaws/ccrestoration swinir_config.py and several download manifests.
        sha256="b9afb61e65e04eb7f8aba5095d070bbe9af28df76acd0c9405aeb33b814bcfc6", size=67129861,
        sha256_source="TensoRaws/ccrestoration swinir_config.py; independent download manifests",
        licence="Apache-2.0", non_commercial=False, task="sr", arch="SwinIR-M (window 8, nearest+conv)",
        scale=4, io=f"{_RRDB_IO}; pads internally to the window size (8)",
        description="SwinIR real-world x4 (BSRGAN degradations, GAN); transformer teacher.",
    ),
    ZooEntry(
        name="scunet_color_real_psnr", filename="scunet_color_real_psnr.pth",
        # the SCUNet README links the author's KAIR v1.0 release for its weights
        url="https://github.com/cszn/KAIR/releases/download/v1.0/scunet_color_real_psnr.pth",
        # sha256 + size: TensoRaws/ccrestoration scunet_config.py and several download manifests.
        sha256="fa78899ba2caec9d235a900e91d96c689da71c42029230c2028b00f09f809c2e", size=71982841,
        sha256_source="TensoRaws/ccrestoration scunet_config.py; independent download manifests",
        licence="Apache-2.0 (SCUNet)", non_commercial=False, task="restore", arch="SCUNet (Swin-Conv UNet)",
        scale=1, io="RGB float in [0, 1], NCHW; at least 40x40 (pads internally to a multiple of 64)",
        description="SCUNet real-photo blind denoising (PSNR-oriented).",
    ),
)}


def list_entries() -> list[ZooEntry]:
    """Every registered entry, in registry order."""
    return list(REGISTRY.values())


def get_entry(name: str) -> ZooEntry:
    """The entry called ``name`` (case-insensitive); unknown names suggest the closest match."""
    if name in REGISTRY:
        return REGISTRY[name]
    folded = {k.lower(): v for k, v in REGISTRY.items()}
    if name.lower() in folded:
        return folded[name.lower()]
    close = difflib.get_close_matches(name.lower(), list(folded), n=1, cutoff=0.5)
    hint = f"; did you mean '{folded[close[0]].name}'?" if close else ""
    raise BadInputError(f"unknown zoo model '{name}'{hint} (restorekit zoo list shows them all)")


def cache_dir() -> Path:
    """``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``, else ``~/.cache/restorekit``."""
    if os.environ.get("RESTOREKIT_CACHE"):
        return Path(os.environ["RESTOREKIT_CACHE"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "restorekit"


def models_dir() -> Path:
    """Where downloaded weights are cached (``$RESTOREKIT_CACHE`` or the XDG cache)."""
    return cache_dir() / "models"


def model_path(name: str) -> Path:
    """Where ``name`` lives once installed (whether or not it is there)."""
    return models_dir() / get_entry(name).filename


def _stamp(path: Path) -> Path:
    return path.with_name(f".{path.name}.verified")


RACY_NS = 2_000_000_000  # file timestamps this close to the stamp's own time may not show a rewrite


def _write_stamp(path: Path, digest: str) -> None:
    """Record the verified sha256 beside ``path`` with its size and mtime (so unchanged files are not hashed again)."""
    st = path.stat()
    atomic_write_text(_stamp(path), json.dumps({"sha256": digest, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
                                                "stamped_ns": time.time_ns()}))


def recorded_sha256(path: Path) -> str | None:
    """The sha256 recorded when ``path`` was installed, if its size and mtime are unchanged; else None.

    A file modified within ``RACY_NS`` of its stamp can be rewritten without its mtime changing
    (coarse file-system clocks), so it is hashed again instead of trusted (git's "racy clean" rule)."""
    st = path.stat()
    try:
        s = json.loads(_stamp(path).read_text())
        if s["size"] != st.st_size or s["mtime_ns"] != st.st_mtime_ns:
            return None
        if st.st_mtime_ns + RACY_NS > int(s.get("stamped_ns", 0)):
            return s["sha256"] if sha256_file(path) == s["sha256"] else None
        return s["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def cached_path(name: str) -> Path | None:
    """The installed file of ``name`` if present and verified, else None."""
    entry = get_entry(name)
    path = models_dir() / entry.filename
    if not path.is_file():
        return None
    digest = recorded_sha256(path)
    if digest is None:
        if not entry.accepted_sha256:
            return None  # no stamp and nothing to check against: never installed by us
        digest = sha256_file(path)
        if digest in entry.accepted_sha256:
            _write_stamp(path, digest)
    if entry.accepted_sha256 and digest not in entry.accepted_sha256:
        return None
    return path


def _check(entry: ZooEntry, digest: str, what: str, trust_unverified: bool) -> None:
    """Raise BadInputError unless ``digest`` is acceptable for ``entry``."""
    if entry.accepted_sha256:
        if digest not in entry.accepted_sha256:
            expected = " or ".join(entry.accepted_sha256)
            raise BadInputError(f"sha256 mismatch for {entry.name} ({what}): expected {expected}, got {digest}; "
                                "not installed")
    elif not trust_unverified:
        raise BadInputError(f"{entry.name} has no published sha256; {what} has sha256 {digest}; not installed "
                            f"(check it yourself, then re-run with --trust-unverified)")


def _manual_step(entry: ZooEntry, reason: str) -> BadInputError:
    return BadInputError(f"could not download {entry.name} ({reason}): download {entry.url} by hand, "
                         f"then: restorekit zoo fetch {entry.name} --from FILE")


def _download(entry: ZooEntry, part: Path, progress: bool, timeout: float) -> None:
    """Fetch ``entry.url`` into ``part``, resuming a partial file with an HTTP Range request."""
    have = part.stat().st_size if part.exists() else 0
    req = urllib.request.Request(entry.url, headers={"User-Agent": _USER_AGENT})
    if have:
        req.add_header("Range", f"bytes={have}-")
    try:
        resp = urllib.request.urlopen(req, timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to send: the partial file is complete (or bad)
            return
        raise _manual_step(entry, f"HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, http.client.HTTPException, OSError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise _manual_step(entry, f"offline or unreachable: {reason}") from None
    with resp:
        resumed = have > 0 and resp.status == 206 and \
            (resp.headers.get("Content-Range") or "").startswith(f"bytes {have}-")
        if not resumed:  # fresh download, or a server that ignored the Range header: start over
            have = 0
        length = resp.headers.get("Content-Length")
        expected = int(length) if length and length.isdigit() else None
        total = have + expected if expected is not None else entry.size
        bar = None
        if progress:
            from rich.console import Console
            from rich.progress import (BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn,
                                       TransferSpeedColumn)

            bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                           TimeRemainingColumn(), console=Console(stderr=True), transient=True)
            task = bar.add_task(f"{entry.name}{' (resumed)' if resumed else ''}", total=total, completed=have)
            bar.start()
        got = 0
        try:
            with open(part, "ab" if resumed else "wb") as fh:
                while chunk := resp.read1(_CHUNK):  # what has arrived: progress and resumable bytes as they come
                    fh.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.advance(task, len(chunk))
            if expected is not None and got < expected:  # the server closed the connection early
                raise http.client.IncompleteRead(b"", expected - got)
        except (http.client.HTTPException, OSError) as exc:
            raise BadInputError(f"download of {entry.name} interrupted ({exc!r}); run the same command again to "
                                f"resume, or download {entry.url} by hand, then: "
                                f"restorekit zoo fetch {entry.name} --from FILE") from None
        finally:
            if bar is not None:
                bar.stop()


def fetch(name: str, progress: bool = True, *, trust_unverified: bool = False, timeout: float = 30.0) -> Path:
    """Download ``name`` into the cache (resuming ``<file>.part``), verify its sha256, move it into place."""
    entry = get_entry(name)
    if (done := cached_path(entry.name)) is not None:
        return done
    dest = models_dir() / entry.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(dest.parent)  # an install that was killed mid-copy
    part = dest.with_name(dest.name + ".part")
    _download(entry, part, progress, timeout)
    digest = sha256_file(part)
    try:
        _check(entry, digest, "the download", trust_unverified)
    except BadInputError:
        part.unlink(missing_ok=True)
        raise
    os.replace(part, dest)
    _write_stamp(dest, digest)
    return dest


def install_from(name: str, file: str | os.PathLike, *, trust_unverified: bool = False) -> Path:
    """Copy a local copy of ``name`` atomically into the cache, verifying exactly the bytes copied
    (hashed as they are written, in one read: a file changed meanwhile cannot slip in)."""
    entry = get_entry(name)
    src = Path(file).expanduser()
    if not src.is_file():
        raise BadInputError(f"file not found: {src}")
    dest = models_dir() / entry.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    remove_abandoned_temps(dest.parent)  # an install that was killed mid-copy
    digest = ""

    def copy_verified(out) -> None:
        nonlocal digest
        h = hashlib.sha256()
        with open(src, "rb") as inp:
            while chunk := inp.read(_CHUNK):
                h.update(chunk)
                out.write(chunk)
        digest = h.hexdigest()
        _check(entry, digest, str(src), trust_unverified)  # raising here leaves nothing installed

    atomic_write(dest, copy_verified)
    _write_stamp(dest, digest)
    return dest


def resolve_model_ref(ref: str | os.PathLike) -> str | os.PathLike | Path:
    """A zoo name becomes its verified cached file; anything else (a path) is returned unchanged.

    An existing file wins over a zoo name of the same spelling.
    """
    text = os.fspath(ref)
    key = {k.lower(): k for k in REGISTRY}.get(text.lower())
    if key is None or os.path.exists(text):
        return ref
    path = cached_path(key)
    if path is None:
        raise BadInputError(f"zoo model {key} is not downloaded yet: run `restorekit zoo fetch {key}` "
                            f"(offline: download {REGISTRY[key].url}, then `restorekit zoo fetch {key} --from FILE`)")
    return path
