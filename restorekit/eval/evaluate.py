"""`restorekit eval`: a bundle against its full-precision reference on real photos.

Fidelity (how close to the reference) on centre crops of every photo, optionally quality (how
good) against clean originals degraded by the project's synthetic pipeline at a fixed seed, and
latency of bundle and reference side by side. The result is a JSON-ready dict with stable keys
(``EVAL_SCHEMA_VERSION``) that gates, baselines and the HTML page read.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from restorekit import __version__
from restorekit.core.errors import BadInputError
from restorekit.runtime.task_io import viewable
from restorekit.eval.fidelity import EvalTile, eval_tiles, fidelity_row, latency_side_by_side
from restorekit.eval.sanity import SANITY_BARS, sanity_summary
from restorekit.core.metrics import psnr, ssim
from restorekit.runtime.session import Session

EVAL_SCHEMA_VERSION = 1
QUALITY_SEED = 0


@dataclass
class Panel:
    """What the HTML page shows for one image: input, reference output, bundle output (HxWx3)."""

    name: str
    input: np.ndarray
    reference: np.ndarray
    bundle: np.ndarray


@dataclass
class EvalRun:
    """Everything one `eval` measured: the JSON payload and the images behind it."""

    data: dict
    panels: list[Panel] = field(default_factory=list)


def _hwc(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x[0].transpose(1, 2, 0))


def summarize(rows: list[dict]) -> dict:
    """Mean / worst over the per-image rows, with the output-sanity extremes and verdict."""
    col = lambda k: np.array([r[k] for r in rows], dtype=np.float64)  # noqa: E731
    return {
        "images": len(rows),
        "psnr_db_mean": round(float(col("psnr_db").mean()), 3),
        "psnr_db_min": round(float(col("psnr_db").min()), 3),
        "ssim_mean": round(float(col("ssim").mean()), 5),
        "ssim_min": round(float(col("ssim").min()), 5),
        "max_abs_err": round(float(col("max_abs_err").max()), 6),
        "delta_e00_mean": (round(float(np.mean(de)), 4)
                           if (de := [r["delta_e00"] for r in rows if r["delta_e00"] is not None]) else None),
        "nonfinite": int(col("nonfinite").sum()),
        "clipped_new": int(col("clipped_new").sum()),
        **sanity_summary(rows),
    }


def quality_rows(session: Session, reference: Session, folder: Path, scale: int, size: int, count: int,
                 seed: int = QUALITY_SEED) -> list[dict]:
    """Score reference and bundle against clean originals: each photo's centre crop (size*scale)
    is degraded by ``degrade_pair`` at ``seed`` into a size x size input for both."""
    import cv2

    from restorekit.degrade.synthetic import degrade_pair

    rows = []
    for i, tile in enumerate(eval_tiles(folder, size=size * scale, count=count)):
        hr = _hwc(tile.x)
        lr = degrade_pair(hr, scale, np.random.default_rng([seed, i]))
        x = np.ascontiguousarray(lr.transpose(2, 0, 1)[None], dtype=np.float32)
        ref_out = np.clip(_hwc(reference.run(x)), 0, 1)
        out = np.clip(np.nan_to_num(_hwc(session.run(x))), 0, 1)
        cubic = np.clip(cv2.resize(lr, (hr.shape[1], hr.shape[0]), interpolation=cv2.INTER_CUBIC), 0, 1)
        rows.append({
            "image": tile.name,
            "bicubic_psnr_db": round(psnr(cubic, hr), 3),
            "reference_psnr_db": round(psnr(ref_out, hr), 3),
            "bundle_psnr_db": round(psnr(out, hr), 3),
            "reference_ssim": round(ssim(ref_out, hr), 5),
            "bundle_ssim": round(ssim(out, hr), 5),
        })
    return rows


def evaluate(session: Session, reference: Session, images: Path, *, bundle_info: dict, size: int,
             count: int = 8, scale: int = 1, quality: bool = False, runs: int = 10) -> EvalRun:
    """Run ``session`` and ``reference`` on crops of ``images``; return the eval payload."""
    task = bundle_info.get("task", "restore")
    tiles: list[EvalTile] = eval_tiles(images, size=size, count=count, task=task)
    rows, panels = [], []
    for tile in tiles:
        ref = reference.run(tile.x)
        out = session.run(tile.x)
        if out.shape != ref.shape:
            raise BadInputError(f"bundle output shape {out.shape} differs from the reference {ref.shape}")
        rows.append(fidelity_row(tile.name, _hwc(out), _hwc(ref)))
        panels.append(Panel(tile.name, _hwc(viewable(task, tile.x)), _hwc(viewable(task, ref, tile.x)),
                            _hwc(viewable(task, out, tile.x))))
    (p50, p95), (r50, r95) = latency_side_by_side(session, reference, tiles[0].x, runs=runs)
    data = {
        "schema_version": EVAL_SCHEMA_VERSION,
        "kind": "restorekit.eval",
        "toolkit_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "bundle": bundle_info,
        "reference": {"device": reference.device},
        "images": {"folder": str(images), "crop": size, "count": len(tiles)},
        "summary": summarize(rows),
        "per_image": rows,
        "latency": {
            "input": "x".join(map(str, tiles[0].x.shape)), "runs": runs,
            "bundle_ms_p50": round(p50, 3), "bundle_ms_p95": round(p95, 3),
            "reference_ms_p50": round(r50, 3), "reference_ms_p95": round(r95, 3),
            "bundle_device": session.device, "reference_device": reference.device,
        },
        "quality": None,
    }
    if quality:
        q = quality_rows(session, reference, images, scale, size, count)
        mean = lambda k: round(float(np.mean([r[k] for r in q])), 3)  # noqa: E731
        data["quality"] = {
            "seed": QUALITY_SEED, "degradation": "restorekit.degrade.synthetic.degrade_pair defaults",
            "per_image": q,
            "mean": {k: mean(k) for k in ("bicubic_psnr_db", "reference_psnr_db", "bundle_psnr_db",
                                          "reference_ssim", "bundle_ssim")},
        }
    return EvalRun(data=data, panels=panels)


def evaluate_bundle(bundle, images: Path, *, reference: str | None = None, gates=None, baseline: Path | None = None,
                    count: int = 8, size: int | None = None, runs: int = 10, clean: bool = False) -> tuple[EvalRun, list]:
    """Evaluate a loaded bundle (``runtime.load_bundle``) against its reference checkpoint (default:
    the one it was made from) on crops of ``images`` (default side: the bundle's tile), check
    ``gates`` (an :class:`~restorekit.eval.gates.Gates`) and the ``baseline`` result file; the
    run's data records the gates. The output-sanity checks (``eval.sanity``) always apply.
    Returns the run and the gate failures."""
    from restorekit.eval.gates import Gates, check, load_result
    from restorekit.models.loader import default_reference, load_model
    from restorekit.models.reference import TorchSession

    gates = gates or Gates()
    old = load_result(baseline) if baseline else None
    m = bundle.manifest
    ref = TorchSession(load_model(reference or default_reference(m)).module)
    crop = size or (bundle.session.fixed_size[0] if bundle.session.fixed_size else m.tiling.get("tile") or 256)
    info = {"path": str(bundle.path), "name": m.name, "target": m.target, "precision": m.precision,
            "scale": m.scale, "task": m.task, "model_sha256": m.files[0]["sha256"] if m.files else None}
    result = evaluate(bundle.session, ref, images, bundle_info=info, size=crop, count=count, scale=m.scale,
                      quality=clean, runs=runs)
    failures = check(result.data, gates, old)
    result.data["gates"] = {"thresholds": gates.active(), "baseline": str(baseline) if baseline else None,
                            "passed": not failures, "failures": [str(f) for f in failures],
                            "sanity_bars": asdict(SANITY_BARS)}
    return result, failures
