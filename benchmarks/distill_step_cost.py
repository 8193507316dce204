"""Where a distillation step's time goes, and what the pool of cached teacher outputs saves.

    .venv/bin/python benchmarks/distill_step_cost.py [--steps 200] [--batch-size 8] [--patch-size 64]

Times, in one process and one after the other on the same machine, (1) a fresh-sample step split
into degradation, teacher and student (forward + backward + Adam), and (2) a pooled step
(``PairPool.advance`` with one new sample + batch draw + the same student update). Prints
milliseconds per step and the ratio. Teacher: Real-ESRGAN Compact from ``../shared/weights``;
student ``edge-s-x4``; data ``../shared/photos``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from restorekit.models.loader import load_model
from restorekit.models.students import build_student
from restorekit.training.data import image_folders, load_training_images
from restorekit.training.distill import distill_batch, sample_pair
from restorekit.training.loop import to_nchw
from restorekit.training.pool import PairPool

SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def main() -> None:
    """Time fresh-sample and pooled distillation steps and print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--pool-refresh", type=int, default=1)
    args = ap.parse_args()
    b, p, scale = args.batch_size, args.patch_size, 4
    images = load_training_images(image_folders([SHARED / "photos"]), min_size=p * scale).images
    teacher = load_model(SHARED / "weights" / "realesr-animevideov3.pth").module.eval().requires_grad_(False)
    student = build_student("edge-s-x4")
    opt = torch.optim.Adam(student.parameters(), lr=1e-4)
    cpu = torch.device("cpu")

    def update(x, target):
        """One student step towards ``target``."""
        loss = (student(x) - target).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    split = {"degrade": 0.0, "teacher": 0.0, "student": 0.0}
    for step in range(args.steps + 5):
        t0 = time.perf_counter()
        x_np, _ = distill_batch(images, 0, step, b, p, scale, "second-order")
        t1 = time.perf_counter()
        x = to_nchw(x_np, cpu)
        with torch.no_grad():
            target = teacher(x).clamp(0, 1)
        t2 = time.perf_counter()
        update(x, target)
        t3 = time.perf_counter()
        if step >= 5:  # warm-up
            for k, dt in zip(split, (t1 - t0, t2 - t1, t3 - t2)):
                split[k] += dt / args.steps
    fresh = sum(split.values())

    def draw(words):
        """One (LR, HR) pool sample."""
        return sample_pair(images, np.random.default_rng(words), p, scale, "second-order")

    pool = PairPool(draw, teacher, 0, max(64, b), args.pool_refresh, cpu)
    pool.fill(0)
    for step in range(5):
        pool.advance(step)
        update(*pool.batch(step, b)[:2])
    t0 = time.perf_counter()
    for step in range(5, 5 + args.steps):
        pool.advance(step)
        update(*pool.batch(step, b)[:2])
    pooled = (time.perf_counter() - t0) / args.steps

    print(f"batch {b} x {p} px LR, x{scale}, {torch.get_num_threads()} threads, {args.steps} steps each")
    print("| step | ms per step | of which degrade / teacher / student |")
    print("|---|---:|---|")
    parts = " / ".join(f"{100 * v / fresh:.0f} %" for v in split.values())
    print(f"| fresh samples | {1000 * fresh:.1f} | {parts} |")
    print(f"| pool, {args.pool_refresh} new per step | {1000 * pooled:.1f} | |")
    print(f"pooled steps per fresh step's time: {fresh / pooled:.2f}x")


if __name__ == "__main__":
    main()
