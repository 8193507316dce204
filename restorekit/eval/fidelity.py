"""Fidelity of a bundle against its full-precision reference, and latency side by side."""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.metrics import delta_e00, max_abs_err, new_clipped, nonfinite, psnr, ssim
from restorekit.core.image import list_images, read_image
from restorekit.eval.sanity import sanity_row, sanity_summary
from restorekit.runtime.session import Session
from restorekit.runtime.task_io import example_input
from restorekit.runtime.tiling import pad_to


@dataclass
class EvalTile:
    """One evaluation input: a named NCHW float32 crop of a real photo."""

    name: str
    x: np.ndarray


def _eval_inputs(folder: str | Path, count: int, prepare) -> list[EvalTile]:
    """``prepare(rgb)`` of up to ``count`` readable photos in ``folder`` (unreadable ones skipped, each
    with a warning naming it)."""
    out = []
    for p in list_images(folder):
        try:
            rgb = read_image(p).rgb
        except BadInputError as exc:  # named, never dropped in silence: the gate ran on fewer photos
            warnings.warn(f"evaluation photo skipped: {exc}", stacklevel=2)
            continue
        out.append(EvalTile(p.name, np.ascontiguousarray(prepare(rgb).transpose(2, 0, 1)[None], dtype=np.float32)))
        if len(out) >= count:
            break
    if not out:
        raise BadInputError(f"no readable images in evaluation folder {folder}")
    return out


def eval_tiles(folder: str | Path, size: int, count: int = 8, task: str = "restore") -> list[EvalTile]:
    """Centre crops of ``size`` x ``size`` from up to ``count`` photos in ``folder``, as the input
    a ``task`` model takes (``runtime.task_io.example_input``: gray for colorize, + a scratch mask
    for inpaint)."""

    def crop(rgb):
        rgb = pad_to(rgb, size, size)
        y, x = (rgb.shape[0] - size) // 2, (rgb.shape[1] - size) // 2
        return rgb[y : y + size, x : x + size]

    tiles = _eval_inputs(folder, count, crop)
    return [EvalTile(t.name, example_input(task, t.x, seed=i)) for i, t in enumerate(tiles)]


def eval_photos(folder: str | Path, max_side: int, count: int = 8) -> list[EvalTile]:
    """Whole photos from ``folder``, reduced (area) to at most ``max_side`` px on the long side."""
    import cv2

    def fit(rgb):
        k = min(1.0, max_side / max(rgb.shape[:2]))
        if k >= 1:
            return rgb
        return cv2.resize(rgb, (round(rgb.shape[1] * k), round(rgb.shape[0] * k)), interpolation=cv2.INTER_AREA)

    return _eval_inputs(folder, count, fit)


@dataclass
class Fidelity:
    """Bundle vs reference on a set of tiles, plus latency measured in the same run."""

    per_image: list[dict] = field(default_factory=list)
    fidelity_psnr_db: float = float("nan")  # mean over images
    fidelity_psnr_min_db: float = float("nan")
    fidelity_ssim: float = float("nan")
    max_abs_err: float = float("nan")
    nonfinite: int = 0
    latency_ms_p50: float = float("nan")
    latency_ms_p95: float = float("nan")
    reference_latency_ms_p50: float = float("nan")
    reference_latency_ms_p95: float = float("nan")
    latency_input: str = ""
    # output-sanity checks (eval/sanity.py): extremes over the images and the verdict
    std_ratio_min: float | None = None
    std_ratio_max: float | None = None
    mean_shift_max: float | None = None  # None: not a 3-channel output
    delta_e00_max: float | None = None
    sanity_passed: bool | None = None
    sanity_failures: list[str] = field(default_factory=list)

    def to_metrics(self) -> dict:
        """The manifest ``metrics`` keys of this comparison."""
        d = asdict(self)
        d.pop("per_image")
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in d.items()}


#: A reference output whose values reach beyond this is not pixels (a randomly initialised
#: network, as the coverage runs use): its PSNR is taken with its own peak instead of 1.
PIXEL_PEAK_LIMIT = 2.0


def psnr_peak(ref: np.ndarray) -> float:
    """The peak PSNR is measured against: 1 for pixels, max |reference| for a reference far outside them."""
    top = float(np.abs(ref).max()) if ref.size else 1.0
    return top if top > PIXEL_PEAK_LIMIT else 1.0


def fidelity_row(name: str, out: np.ndarray, ref: np.ndarray) -> dict:
    """Per-image fidelity of a bundle output against the reference output (HxWxC floats), with
    the output-sanity values and failed checks (``eval.sanity.sanity_row``)."""
    nf = nonfinite(out)
    clean = np.nan_to_num(out, nan=0.0, posinf=1.0, neginf=0.0)
    peak = psnr_peak(ref)
    de = delta_e00(clean, ref)
    return {
        "image": name,
        "psnr_db": round(psnr(clean, ref, peak=peak), 3),
        "ssim": round(ssim(clean, ref), 5),
        "max_abs_err": round(max_abs_err(clean, ref), 6),
        "delta_e00": None if de is None else round(de, 4),
        "nonfinite": nf,
        "clipped_new": new_clipped(out, ref),
        **sanity_row(clean, ref, nonfinite=nf, delta_e00=de, peak=peak),
    }


def compare(session: Session, tiles: list[EvalTile], references: list[np.ndarray]) -> Fidelity:
    """Run ``session`` on every tile and score it against the reference outputs."""
    res = Fidelity()
    for tile, ref in zip(tiles, references):
        out = session.run(tile.x)
        if out.shape != ref.shape:
            raise BadInputError(f"bundle output shape {out.shape} differs from the reference {ref.shape}")
        res.per_image.append(fidelity_row(tile.name, out[0].transpose(1, 2, 0), ref[0].transpose(1, 2, 0)))
    res.fidelity_psnr_db = float(np.mean([r["psnr_db"] for r in res.per_image]))
    res.fidelity_psnr_min_db = float(np.min([r["psnr_db"] for r in res.per_image]))
    res.fidelity_ssim = float(np.mean([r["ssim"] for r in res.per_image]))
    res.max_abs_err = float(np.max([r["max_abs_err"] for r in res.per_image]))
    res.nonfinite = int(sum(r["nonfinite"] for r in res.per_image))
    for key, value in sanity_summary(res.per_image).items():
        setattr(res, key, value)
    return res


def latency_side_by_side(session: Session, reference: Session, x: np.ndarray, runs: int = 10,
                         warmup: int = 2) -> tuple[tuple[float, float], tuple[float, float]]:
    """(p50, p95) in ms of the bundle and of the reference on the same input, runs interleaved
    (after at most ``runs`` warm-up runs each)."""
    for _ in range(min(warmup, runs)):
        session.run(x)
        reference.run(x)
    t_b, t_r = [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        session.run(x)
        t1 = time.perf_counter()
        reference.run(x)
        t2 = time.perf_counter()
        t_b.append((t1 - t0) * 1e3)
        t_r.append((t2 - t1) * 1e3)
    pct = lambda t: (float(np.percentile(t, 50)), float(np.percentile(t, 95)))  # noqa: E731
    return pct(t_b), pct(t_r)
