"""Distillation's data path with sample worker processes: samples per second and training steps per
second for 0, 1 and 2 workers, side by side in one run.

    python benchmarks/distill_throughput.py [--steps 40] [--batch-size 8] [--patch-size 64] [--out FILE]

1. Data path alone: the degraded (LR, HR) samples of ``--steps`` batches of ``--batch-size``, asked
   for the way training asks (the next two steps' samples ahead), with 0 workers (made in this
   process), 1 and 2 (``restorekit.training.workers.SampleWorkers``; second-order degradations,
   LR patch ``--patch-size``, x4). Also checks the batches are bit-identical across the counts.
2. Training: ``restorekit distill`` steps per second with fresh samples for 0, 1 and 2 workers,
   and with a pool of 256 cached teacher outputs (1 new per step; the pooled CPU recipe of
   docs/distillation.md) for 0 and 1 worker, the same number of steps each. Teacher: Real-ESRGAN Compact
   (``../shared/weights/realesr-animevideov3.pth``); student ``edge-s-x4``; data
   ``../shared/photos``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT.parent / "shared"

from restorekit.training.data import image_folders, load_training_images  # noqa: E402
from restorekit.training.workers import SampleWorkers  # noqa: E402

AHEAD = 2  # as restorekit.training.distill.SAMPLE_STEPS_AHEAD


def data_path(images, workers: int, steps: int, batch: int, patch: int) -> tuple[float, list]:
    """Samples per second of ``steps`` batches asked for as training asks, and the samples."""
    words = [[[0, t, i] for i in range(batch)] for t in range(steps)]
    with SampleWorkers(images, patch, 4, "second-order", workers=workers) as samples:
        samples.get(words[0][:1])  # start-up (the workers' imports and photos) is not the rate
        t0 = time.perf_counter()
        made = []
        for t in range(steps):
            for ahead in range(t + 1, min(t + 1 + AHEAD, steps)):
                samples.ahead(words[ahead])
            made.extend(samples.get(words[t]))
        return steps * batch / (time.perf_counter() - t0), made


def training(workers: int, steps: int, batch: int, patch: int, pool: int) -> float:
    """``distill`` steps per second, from the first step's batch to the last one's (start-up, pool
    filling and validation excluded)."""
    from restorekit.training.distill import DistillTask, distill

    starts, real = [], DistillTask.batch

    def timed(self, step):
        starts.append(time.perf_counter())
        return real(self, step)

    DistillTask.batch = timed
    try:
        with tempfile.TemporaryDirectory() as tmp:
            distill(str(SHARED / "weights" / "realesr-animevideov3.pth"), "edge-s-x4", [SHARED / "photos"],
                    Path(tmp) / "s.safetensors", steps=steps, batch_size=batch, patch_size=patch,
                    val_every=10 * steps, val_crops=2, progress=False, device="cpu", workers=workers,
                    pool_size=pool, pool_refresh=1, resume=False)
    finally:
        DistillTask.batch = real
    return (len(starts) - 1) / (starts[-1] - starts[0])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--patch-size", type=int, default=64)
    ap.add_argument("--out", type=Path, help="write the markdown table here")
    args = ap.parse_args(argv)
    images = load_training_images(image_folders([SHARED / "photos"]), min_size=args.patch_size * 4).images
    rows, made = [], {}
    for workers in (0, 1, 2):
        rate, made[workers] = data_path(images, workers, args.steps, args.batch_size, args.patch_size)
        rows.append((f"data path, {workers} worker{'s' if workers != 1 else ''}", rate, "samples/s"))
        print(rows[-1], flush=True)
    same = all(np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
               for w in (1, 2) for a, b in zip(made[0], made[w]))
    for label, workers, pool in (("training, fresh samples, 0 workers", 0, 0),
                                 ("training, fresh samples, 1 worker (the default on 2 cores)", 1, 0),
                                 ("training, fresh samples, 2 workers", 2, 0),
                                 ("training, pool of 256 (1 new per step), 0 workers", 0, 256),
                                 ("training, pool of 256 (1 new per step), 1 worker", 1, 256)):
        rows.append((label, training(workers, args.steps, args.batch_size, args.patch_size, pool), "steps/s"))
        print(rows[-1], flush=True)
    base = {"samples/s": rows[0][1], "steps/s": rows[3][1]}
    lines = ["# Distillation throughput: sample workers", "",
             f"- Command: `python benchmarks/distill_throughput.py --steps {args.steps} --batch-size {args.batch_size} "
             f"--patch-size {args.patch_size}`",
             f"- Date: {datetime.date.today()}; machine: {platform.machine()}, {os.cpu_count()} cores, no GPU; alone",
             f"- Batches bit-identical with 0, 1 and 2 workers: {'yes' if same else 'NO'}", "",
             "| what | rate | over 0 workers |", "|---|---|---|"]
    lines += [f"| {label} | {rate:.2f} {unit} | {rate / base[unit]:.2f}x |" for label, rate, unit in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
