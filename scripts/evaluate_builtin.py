#!/usr/bin/env python
"""Measure the built-in model against bicubic upscaling on the held-out sample images.

    .venv/bin/python scripts/evaluate_builtin.py [--json PATH] [--figure PATH]

For each held-out image (never trained on; see scripts/train_builtin.py) it cuts ``--crops``
random ``--crop-size`` HR crops at a fixed seed, degrades each with the training pipeline
(``degrade_pair``, default ranges) into a half-size LR input, and compares the model's 2x output
and bicubic 2x upscaling of the LR with the clean crop (PSNR and SSIM on RGB in [0, 1]).
Prints a markdown table; exits 1 when the mean gain is below ``--min-gain`` dB (the quality bar).

It also draws ``docs/builtin_old_photos.png``: bicubic 2x | model output on crops of real old
photos from ../shared/photos/old/ (skipped with a note when that folder is absent).
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from restorekit.degrade.synthetic import degrade_pair  # noqa: E402
from restorekit.core.metrics import psnr, ssim  # noqa: E402
from restorekit.models.builtin import BUILTIN_WEIGHTS, load_edgenet_safetensors  # noqa: E402
from restorekit.core.image import read_image  # noqa: E402
from train_builtin import HELD_OUT  # noqa: E402

OLD_PHOTOS = ROOT.parent / "shared" / "photos" / "old"
#: (file, centre y, centre x as fractions of the photo, LR crop side in pixels)
FIGURE_CROPS = (
    ("bopb_old_a.png", 0.36, 0.45, 150),
    ("bopb_old_c.png", 0.30, 0.50, 150),
    ("bopb_old_d.png", 0.50, 0.45, 150),
)


def bicubic(lr: np.ndarray, scale: int) -> np.ndarray:
    h, w = lr.shape[:2]
    return np.clip(cv2.resize(lr, (w * scale, h * scale), interpolation=cv2.INTER_CUBIC), 0.0, 1.0)


def run_model(model, lr: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        x = torch.from_numpy(np.ascontiguousarray(lr.transpose(2, 0, 1)))[None]
        return model(x)[0].numpy().transpose(1, 2, 0)


def make_pairs(img: np.ndarray, rng: np.random.Generator, crops: int, size: int, scale: int):
    """``crops`` (clean HR crop, degraded LR) pairs from one image; the whole image (trimmed to
    a multiple of the scale) when it is smaller than ``size``."""
    h, w = img.shape[:2]
    for _ in range(crops):
        ch, cw = min(size, h - h % scale), min(size, w - w % scale)
        y = int(rng.integers(h - ch + 1))
        x = int(rng.integers(w - cw + 1))
        hr = np.ascontiguousarray(img[y : y + ch, x : x + cw])
        yield hr, degrade_pair(hr, scale, rng)


def evaluate(model, images: dict[str, np.ndarray], seed: int, crops: int, size: int) -> list[dict]:
    rows = []
    for idx, (name, img) in enumerate(images.items()):
        rng = np.random.default_rng([seed, idx])
        scores = {"bicubic_psnr": [], "model_psnr": [], "bicubic_ssim": [], "model_ssim": []}
        for hr, lr in make_pairs(img, rng, crops, size, model.scale):
            up, out = bicubic(lr, model.scale), run_model(model, lr)
            scores["bicubic_psnr"].append(psnr(up, hr))
            scores["model_psnr"].append(psnr(out, hr))
            scores["bicubic_ssim"].append(ssim(up, hr))
            scores["model_ssim"].append(ssim(out, hr))
        row = {"image": name, "pairs": crops, **{k: float(np.mean(v)) for k, v in scores.items()}}
        row["gain_db"] = row["model_psnr"] - row["bicubic_psnr"]
        rows.append(row)
    return rows


def markdown_table(rows: list[dict], mean: dict) -> str:
    lines = [
        "| image | pairs | bicubic PSNR | model PSNR | gain | bicubic SSIM | model SSIM |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in [*rows, mean]:
        lines.append(
            f"| {r['image']} | {r['pairs']} | {r['bicubic_psnr']:.2f} dB | {r['model_psnr']:.2f} dB | "
            f"{r['gain_db']:+.2f} dB | {r['bicubic_ssim']:.4f} | {r['model_ssim']:.4f} |"
        )
    return "\n".join(lines)


def draw_figure(model, path: Path) -> list[str]:
    """bicubic 2x | model on crops of real old photos. Returns the photos used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    todo = [(f, cy, cx, s) for f, cy, cx, s in FIGURE_CROPS if (OLD_PHOTOS / f).is_file()]
    if not todo:
        return []
    fig, axes = plt.subplots(len(todo), 2, figsize=(8, 4.1 * len(todo)), squeeze=False)
    for row, (name, cy, cx, side) in zip(axes, todo):
        rgb = read_image(OLD_PHOTOS / name).rgb
        h, w = rgb.shape[:2]
        side = min(side, h, w)
        y = int(np.clip(cy * h - side / 2, 0, h - side))
        x = int(np.clip(cx * w - side / 2, 0, w - side))
        lr = np.ascontiguousarray(rgb[y : y + side, x : x + side])
        for ax, img, label in zip(row, (bicubic(lr, model.scale), run_model(model, lr)),
                                  ("input, bicubic 2x", "restorekit built-in model 2x")):
            ax.imshow(np.clip(img, 0, 1), interpolation="nearest")
            ax.set_title(f"{label}\n{name}", fontsize=10)
            ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp, dpi=100)
    plt.close(fig)
    os.replace(tmp, path)
    return [t[0] for t in todo]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--weights", type=Path, default=BUILTIN_WEIGHTS)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--crops", type=int, default=8, help="random crops per held-out image")
    ap.add_argument("--crop-size", type=int, default=192, help="HR crop side")
    ap.add_argument("--min-gain", type=float, default=1.0, help="quality bar: mean PSNR gain over bicubic (dB)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs" / "builtin_old_photos.png")
    ap.add_argument("--no-figure", action="store_true")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    model = load_edgenet_safetensors(args.weights)
    images = {name: read_image(ROOT / "sample_images" / name).rgb for name in HELD_OUT}
    rows = evaluate(model, images, args.seed, args.crops, args.crop_size)
    mean = {"image": "**mean**", "pairs": sum(r["pairs"] for r in rows)}
    for key in ("bicubic_psnr", "model_psnr", "bicubic_ssim", "model_ssim", "gain_db"):
        mean[key] = float(np.mean([r[key] for r in rows]))
    passed = mean["gain_db"] >= args.min_gain
    print(
        f"held-out images, {args.crops} random {args.crop_size}x{args.crop_size} HR crops each, "
        f"degrade_pair(scale={model.scale}) defaults, seed {args.seed}\n"
    )
    print(markdown_table(rows, mean))
    print(f"\nmean gain over bicubic: {mean['gain_db']:+.2f} dB PSNR "
          f"(bar {args.min_gain:+.1f} dB: {'PASS' if passed else 'FAIL'})")

    figure_photos: list[str] = []
    if not args.no_figure:
        figure_photos = draw_figure(model, args.figure)
        if figure_photos:
            print(f"wrote {args.figure} ({', '.join(figure_photos)})")
        else:
            print(f"no old photos in {OLD_PHOTOS}: figure skipped")

    if args.json:
        weights = Path(args.weights)
        report = {
            "weights": str(weights.resolve().relative_to(ROOT)) if weights.resolve().is_relative_to(ROOT) else str(weights),
            "weights_sha256": hashlib.sha256(weights.read_bytes()).hexdigest(),
            "config": model.config,
            "held_out": list(HELD_OUT),
            "seed": args.seed,
            "crops_per_image": args.crops,
            "crop_size": args.crop_size,
            "images": rows,
            "mean": {k: v for k, v in mean.items() if k != "image"},
            "mean_gain_db": mean["gain_db"],
            "min_gain_db": args.min_gain,
            "passed": passed,
            "figure_photos": figure_photos,
            "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}",
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0 if passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
