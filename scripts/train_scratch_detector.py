#!/usr/bin/env python
"""Reproduce restorekit's scratch detector, restorekit/models/weights/scratch_unet.safetensors.

    .venv/bin/python scripts/train_scratch_detector.py

Same clean photos as the built-in model (scripts/train_builtin.py: sample_images/ minus the
held-out rocket.jpg and chelsea.png, scikit-image's photos, ../shared/photos/bw for training
only); each 128x128 patch is aged (70 %), damaged with restorekit.degrade.damage (scratches,
hairs, dust, stains, torn corners) and scanned (blur, noise, grain, JPEG); the target is the
defect mask. ScratchUNet width 16, batch 8, seed 0, 2 torch threads.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_builtin import ROOT, data_dirs, exclusions  # noqa: E402  (same data, same held-out images)

WEIGHTS = ROOT / "restorekit" / "models" / "weights" / "scratch_unet.safetensors"
STEPS = 6000
SEED = 0


def main(argv: list[str] | None = None) -> int:
    """Train the scratch detector with the command line's settings."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--out", type=Path, default=WEIGHTS)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)

    import torch

    from restorekit.training.train import train_scratch_detector

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    train_scratch_detector(data_dirs(), args.out, steps=args.steps, seed=args.seed, exclude=exclusions())
    print(f"done in {time.perf_counter() - t0:.0f} s: {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
