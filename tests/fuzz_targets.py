"""The fuzz targets — restorekit's readers of untrusted input — and their seed corpus, shared by the
seeded mutation tests (tests/test_fuzz.py) and the coverage-guided fuzzer (scripts/fuzz.py).

Each target takes the raw bytes of one file, writes them where the reader expects a user's file and
reads it. The only exception allowed out is a RestorekitError with a one-line message (exit 2 and
one line for the user); anything else is a bug. The seeds hold every hostile case of issue 34
(decompression bombs, truncated and metadata-laden photos, manifests with wrong types, gates that
would switch off) next to ordinary files, so the fuzzer starts from them.
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from restorekit.core.errors import RestorekitError

ROOT = Path(__file__).resolve().parents[1]
CORPUS = ROOT / "tests" / "fuzz_corpus"
#: Pixel limit while fuzzing: the header check is what is fuzzed, not how much memory a legal
#: 200 MP photo takes (a mutated header may claim anything up to the limit).
FUZZ_MAX_PIXELS = 4_000_000
BUNDLE_NAMES = ["onnx-int8", "m/onnx-int8"]


def _png_claiming(width: int, height: int, color: int = 2) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width`` x ``height``."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, color, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _jpeg_claiming(jpeg: bytes, width: int, height: int, stray: bytes = b"", app: bytes = b"") -> bytes:
    """``jpeg`` with its frame header claiming ``width`` x ``height``, ``stray`` bytes before the
    frame marker and ``app`` segments after the start of image."""
    at = next(i for i in range(2, len(jpeg) - 1) if jpeg[i] == 0xFF and jpeg[i + 1] == 0xC0)
    frame = bytearray(jpeg[at:])
    frame[5:9] = struct.pack(">HH", height, width)
    return jpeg[:2] + app + jpeg[2:at] + stray + bytes(frame)


def _encoded(ext: str, arr: np.ndarray) -> bytes:
    return cv2.imencode(ext, arr)[1].tobytes()


def image_seeds() -> dict[str, bytes]:
    """Ordinary photos of every layout, photos with a full record (EXIF, XMP, IPTC, ICC), HEIC,
    and the hostile cases: bombs, a zero-sized header, a truncated JPEG."""
    from restorekit.core.image import write_image
    from restorekit.core.metadata import PhotoMetadata

    rng = np.random.default_rng(0)
    rgb = (rng.random((12, 17, 3)) * 255).astype(np.uint8)
    seeds = {f"plain{ext}": _encoded(ext, rgb) for ext in (".png", ".jpg", ".bmp", ".webp", ".tif")}
    seeds.update({
        "gray.png": _encoded(".png", rgb[:, :, 0]),
        "rgba.png": _encoded(".png", np.dstack([rgb, rgb[:, :, :1]])),
        "16bit.png": _encoded(".png", rgb.astype(np.uint16) * 257),
        "16bit.tif": _encoded(".tif", rgb.astype(np.uint16) * 257),
        "bomb_60000.png": _png_claiming(60000, 60000),
        "bomb_30000_gray.png": _png_claiming(30000, 30000, color=0),
        "zero_height.png": _png_claiming(0, 5),
        "truncated.jpg": _encoded(".jpg", rgb)[:200],
        # found by scripts/fuzz.py: libjpeg skips stray bytes before a marker, a strict header walk did not
        "bomb_after_stray_byte.jpg": _jpeg_claiming(_encoded(".jpg", rgb), 30000, 30000, stray=b"\x00"),
        "bomb_behind_big_app_segments.jpg": _jpeg_claiming(_encoded(".jpg", rgb), 30000, 30000,
                                                           app=b"\xff\xe4\xff\xf0" + b"\x00" * 65518),
    })
    from PIL import Image

    exif = Image.Exif()
    exif[0x010F], exif[0x8298], exif[0x0112] = "Kodak", "(c) 1962", 6
    exif.get_ifd(0x8769)[0x9003] = "1962:07:14 10:21:00"
    from restorekit.core.metadata import srgb_profile

    meta = PhotoMetadata(exif=exif.tobytes()[6:], xmp=b"<x:xmpmeta>t</x:xmpmeta>", iptc=b"\x1c\x02\x00\x00\x02\x00\x04",
                         icc=srgb_profile())
    tmp = Path(tempfile.mkdtemp(prefix="restorekit-seeds-"))
    for ext in (".jpg", ".png", ".tif", ".heic"):
        path = tmp / f"record{ext}"
        write_image(path, rgb / 255.0, metadata=PhotoMetadata(**{**meta.__dict__, "notes": []}))
        seeds[f"record{ext}"] = path.read_bytes()
        path.unlink()
    tmp.rmdir()
    return seeds


def manifest_seed() -> dict:
    """A valid bundle manifest (schema version 1)."""
    return json.loads((ROOT / "tests" / "fixtures" / "manifest_v1.json").read_text())


def manifest_seeds() -> dict[str, bytes]:
    """The valid manifest and the wrong types and values issue 34 found accepted or crashing."""
    good = manifest_seed()

    def variant(**changes) -> bytes:
        m = json.loads(json.dumps(good))
        for path, value in changes.items():
            node = m
            keys = path.split("__")
            for k in keys[:-1]:
                node = node[k]
            if value is KeyError:
                node.pop(keys[-1], None)
            else:
                node[keys[-1]] = value
        return json.dumps(m).encode()

    files = good["files"]
    return {
        "valid.json": json.dumps(good).encode(),
        "list_body.json": b"[]",
        "string_schema_version.json": variant(schema_version="1"),
        "missing_sha256.json": variant(files=[{k: v for k, v in files[0].items() if k != "sha256"}]),
        "string_files.json": variant(files="model.onnx"),
        "string_input.json": variant(input="NCHW"),
        "string_value_range.json": variant(input__value_range="0,1"),
        "string_tile.json": variant(tiling__tile="256"),
        "string_scale.json": variant(scale="2"),
        "nhwc_int8_declared.json": variant(input__layout="NHWC", input__dtype="int8"),
        "negative_overlap.json": variant(tiling__overlap=-10),
        "zero_value_range.json": variant(input__value_range=[0, 0]),
        "nan_tile.json": variant(tiling__tile=float("nan")).replace(b"NaN", b"NaN"),
        "other_file_listed.json": variant(files=[{"path": "LICENSE", "sha256": "0" * 64, "bytes": 0}]),
        "escaping_path.json": variant(files=[{**files[0], "path": "../../etc/passwd"}]),
        "unsafe_name.json": variant(name="../../x"),
    }


def policy_seed() -> dict:
    """The documented example gate policy."""
    import yaml

    return yaml.safe_load((ROOT / "docs" / "gates.example.yaml").read_text())


def policy_seeds() -> dict[str, bytes]:
    """The example policy and thresholds that would switch a gate off."""
    example = (ROOT / "docs" / "gates.example.yaml").read_bytes()
    return {"example.yaml": example, "nan_min_psnr.yaml": b"default:\n  min_psnr: .nan\n",
            "negative_nonfinite.yaml": b"default:\n  max_nonfinite: -1\n",
            "list_section.yaml": b"bundles: [1, 2]\n", "inf_drop.yaml": b"default:\n  max_drop: .inf\n"}


RECIPE_SEED = {"scheme": "w8a8", "op_types": {"Linear": None},
               "op_names": {"conv3": {"weights": "int8", "activations": "int16"}}, "calibration": {"tiles": 16},
               "budget_psnr": 40.0, "float_preparation": True, "finetune": {"steps": 10},
               "equalization_alpha": 0.5, "split_prelus": False}


def recipe_seeds() -> dict[str, bytes]:
    """A full recipe and values out of range."""
    import yaml

    return {"full.yaml": yaml.safe_dump(RECIPE_SEED).encode(), "nan_budget.yaml": b"scheme: w8a8\nbudget_psnr: .nan\n",
            "negative_tiles.yaml": b"scheme: w8a8\ncalibration: {tiles: -3}\n", "unknown_scheme.yaml": b"scheme: w3\n"}


def checkpoint_seeds() -> dict[str, bytes]:
    """A small state dict as a torch zip and as safetensors, and pickles that would run code if
    they were unpickled without ``weights_only``."""
    import torch
    from safetensors.torch import save as save_safetensors

    sd = {"body.0.weight": torch.zeros(4, 3, 3, 3), "body.0.bias": torch.zeros(4)}
    buf = io.BytesIO()
    torch.save(sd, buf)

    class Runs:  # pickles to a call of os.getcwd: harmless if it ever ran, refused by weights_only
        def __reduce__(self):
            import os

            return (os.getcwd, ())

    evil, odd_keys = io.BytesIO(), io.BytesIO()
    torch.save({"w": torch.zeros(1), "x": Runs()}, evil)
    # found by scripts/fuzz.py: a key with a newline made the "unsupported architecture" error two lines
    torch.save({"body.0.b\nias": torch.zeros(1), "\x1b[2Jclear": torch.zeros(1)}, odd_keys)
    return {"state_dict.pth": buf.getvalue(), "state_dict.safetensors": save_safetensors(sd),
            "code.pth": evil.getvalue(), "raw_pickle.pth": pickle.dumps(Runs(), protocol=2),
            "huge_header.safetensors": struct.pack("<Q", 2**60) + b"{}", "control_chars_in_keys.pth": odd_keys.getvalue()}


# ------------------------------------------------------------------------------------------ targets

def read_photo(path: Path) -> None:
    """The image reader (header limits, decoders, EXIF orientation, metadata, ICC conversion)."""
    from restorekit.core.image import read_image

    read_image(path, max_pixels=FUZZ_MAX_PIXELS)


def read_bundle_manifest(path: Path) -> None:
    """The manifest reader and the verifier of a bundle's files."""
    from restorekit.bundle.manifest import read_manifest

    read_manifest(path.parent, verify=True)


def read_policy(path: Path) -> None:
    """The gate-policy parser, resolved for two bundle names."""
    from restorekit.eval.gates import load_policy

    load_policy(path, BUNDLE_NAMES)


def read_recipe(path: Path) -> None:
    """The quantization-recipe parser."""
    from restorekit.quantize.recipe import load_recipe

    load_recipe(path)


def read_checkpoint(path: Path) -> None:
    """The checkpoint loader, as `convert`/`bundle` use it (torch.load(weights_only=True) or
    safetensors, then architecture detection)."""
    from restorekit.models.loader import load_model

    load_model(path)


@dataclass(frozen=True)
class Target:
    """A reader of one kind of untrusted file: ``file_name(data)`` is where the bytes go."""

    name: str
    read: Callable[[Path], None]
    seeds: Callable[[], dict[str, bytes]]
    file_name: Callable[[bytes], str]


def _checkpoint_name(data: bytes) -> str:
    return "weights.safetensors" if data[8:9] == b"{" else "weights.pth"


TARGETS = {t.name: t for t in (
    Target("image", read_photo, image_seeds, lambda data: "photo.img"),
    Target("manifest", read_bundle_manifest, manifest_seeds, lambda data: "manifest.json"),
    Target("policy", read_policy, policy_seeds, lambda data: "gates.yaml"),
    Target("recipe", read_recipe, recipe_seeds, lambda data: "recipe.yaml"),
    Target("checkpoint", read_checkpoint, checkpoint_seeds, _checkpoint_name),
)}


def prepare_folder(folder: Path) -> None:
    """The folder a target writes its input into: for the manifest, a bundle with a model file."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.onnx").write_bytes(b"not a model")


def run_target(target: Target, data: bytes, folder: Path) -> str | None:
    """Feed ``data`` to ``target`` in ``folder``; the refusal message, or None when accepted.
    Raises anything that is not a one-line RestorekitError."""
    path = folder / target.file_name(data)
    path.write_bytes(data)
    try:
        target.read(path)
    except RestorekitError as exc:
        if "\n" in str(exc):
            raise AssertionError(f"a multi-line error: {exc!r}") from exc
        return str(exc)
    finally:
        path.unlink(missing_ok=True)
    return None
