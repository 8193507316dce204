#!/usr/bin/env python
"""Measure restorekit's scratch detector on held-out synthetic damage, and show it on real prints.

    .venv/bin/python scripts/evaluate_scratch_detector.py [--json PATH] [--figure PATH]

Held-out: the centre 384x384 of rocket.jpg and chelsea.png (never trained on), each damaged
``--repeats`` times by the training pipeline (aged, ``damage_photo``, scanned) at fixed seeds.
Pixel precision, recall, F1 and IoU of the mask thresholded at 0.5 against the defect mask:
strict, and with a 1-px tolerance (a detection within 1 px of a defect counts, and a defect
within 1 px of a detection is found), since a 1-px-wide scratch is a few pixels in all.

The figure: input | detected mask in red | OpenCV Telea inpainting of the mask, on
../shared/photos/old_scratched/ (real scanned prints; skipped when absent).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restorekit.degrade.damage import damage_photo  # noqa: E402
from restorekit.degrade.synthetic import age_photo, degrade_pair  # noqa: E402
from restorekit.training.train import SCAN_AFTER_DAMAGE  # noqa: E402
from restorekit.models.builtin import load_student_safetensors  # noqa: E402
from restorekit.models.reference import TorchSession  # noqa: E402
from restorekit.restore.defects import detect_defects, inpaint  # noqa: E402
from restorekit.core.image import list_images, read_image  # noqa: E402

HELD_OUT = ("rocket.jpg", "chelsea.png")
WEIGHTS = ROOT / "restorekit" / "models" / "weights" / "scratch_unet.safetensors"
SHARED = ROOT.parent / "shared"


def scores(pred: np.ndarray, truth: np.ndarray, tolerance: int = 0) -> dict:
    grow = (lambda m: cv2.dilate(m.astype(np.uint8), np.ones((2 * tolerance + 1,) * 2, np.uint8)) > 0) if tolerance \
        else (lambda m: m)
    tp_p = np.count_nonzero(pred & grow(truth))  # detections near a defect
    tp_t = np.count_nonzero(truth & grow(pred))  # defects near a detection
    precision = tp_p / max(np.count_nonzero(pred), 1)
    recall = tp_t / max(np.count_nonzero(truth), 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-9)
    iou = np.count_nonzero(pred & truth) / max(np.count_nonzero(pred | truth), 1)
    return {"precision": precision, "recall": recall, "f1": f1, "iou": iou}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=WEIGHTS)
    ap.add_argument("--repeats", type=int, default=6, help="damaged versions of each held-out image")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "scratch_detector_quality.json")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "scratch_detector.png")
    args = ap.parse_args(argv)

    session = TorchSession(load_student_safetensors(args.weights, "ScratchUNet"))
    preds, truths = [], []
    for i, name in enumerate(HELD_OUT):
        rgb = read_image(ROOT / "sample_images" / name).rgb
        h, w = rgb.shape[:2]
        y0, x0 = (h - 384) // 2, (w - 384) // 2
        clean = np.ascontiguousarray(rgb[y0 : y0 + 384, x0 : x0 + 384])
        for k in range(args.repeats):
            rng = np.random.default_rng([1000 + i, k])
            damaged = damage_photo(age_photo(clean, rng), rng)
            scanned = degrade_pair(damaged.image, 1, rng, SCAN_AFTER_DAMAGE)
            preds.append(detect_defects(session, scanned) >= 0.5)
            truths.append(damaged.defects)
    pred, truth = np.concatenate([p.ravel() for p in preds]), np.concatenate([t.ravel() for t in truths])
    strict = scores(pred.reshape(1, -1), truth.reshape(1, -1))
    tolerant = {k: float(np.mean(v)) for k, v in zip(
        ("precision", "recall", "f1", "iou"),
        zip(*[scores(p, t, 1).values() for p, t in zip(preds, truths)]))}
    result = {"weights": str(args.weights.relative_to(ROOT)) if args.weights.is_relative_to(ROOT) else str(args.weights),
              "held_out": list(HELD_OUT), "crop": 384, "repeats": args.repeats, "threshold": 0.5,
              "defect_fraction": float(truth.mean()),
              "strict": {k: round(float(v), 4) for k, v in strict.items()},
              "tolerance_1px_mean_over_images": {k: round(v, 4) for k, v in tolerant.items()}}
    print(f"held-out synthetic damage, {len(preds)} images of 384x384, {100 * truth.mean():.2f} % defect pixels")
    print("| | precision | recall | F1 | IoU |\n|---|---:|---:|---:|---:|")
    for label, s in (("pixel, strict", result["strict"]), ("pixel, 1-px tolerance", result["tolerance_1px_mean_over_images"])):
        print(f"| {label} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {s['iou']:.3f} |")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
        print(f"wrote {args.json}")

    folder = SHARED / "photos" / "old_scratched"
    if args.figure and folder.is_dir():
        rows = []
        for path in list_images(folder):
            rgb = read_image(path).rgb
            mask = detect_defects(session, rgb) >= 0.5
            overlay = rgb.copy()
            overlay[mask] = (1.0, 0.0, 0.0)
            fixed = inpaint(rgb, cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0)
            row = np.concatenate([rgb, overlay, fixed], axis=1)
            scale = 1200 / row.shape[1]
            rows.append(cv2.resize(row, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA))
            print(f"{path.name}: {100 * mask.mean():.2f} % marked")
        figure = np.concatenate(rows, axis=0)
        cv2.imwrite(str(args.figure), np.clip(figure[:, :, ::-1] * 255, 0, 255).astype(np.uint8))
        print(f"wrote {args.figure} (input | detected | inpainted)")
    elif args.figure:
        print(f"no figure: {folder} not found")
    return 0


if __name__ == "__main__":
    sys.exit(main())
