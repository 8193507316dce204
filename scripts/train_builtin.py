#!/usr/bin/env python
"""Reproduce restorekit's built-in model, restorekit/models/weights/restorekit_x2.safetensors.

    .venv/bin/python scripts/train_builtin.py

Training data (read only, nothing is copied):
  * sample_images/            the repo's public-domain / CC0 samples, minus the held-out ones
  * scikit-image's data/      the bundled natural photos listed in SKIMAGE_PHOTOS
  * ../shared/photos/bw/      historical black-and-white photographs (training only, never
                              redistributed; see docs/model-card.md)
Held out (never trained on, used by scripts/evaluate_builtin.py): HELD_OUT.

Byte-identical files (sample_images/ holds copies of scikit-image photos) are loaded once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import skimage  # noqa: E402

from restorekit.core.image import list_images  # noqa: E402
from restorekit.models.builtin import BUILTIN_WEIGHTS  # noqa: E402
from restorekit.training.loop import checkpoint_path  # noqa: E402
from restorekit.training.train import train_supervised  # noqa: E402

SHARED = ROOT.parent / "shared"
SKIMAGE_DATA = Path(skimage.__file__).parent / "data"

#: Sample images kept out of training: the evaluation set of scripts/evaluate_builtin.py.
HELD_OUT = ("rocket.jpg", "chelsea.png")

#: scikit-image photos used for training (PD / CC0 per scikit-image, plus Middlebury's
#: motorcycle). The rest of that folder (charts, microscopy, logos, synthetic images, the
#: motion-blurred clock) is excluded.
SKIMAGE_PHOTOS = (
    "astronaut.png",
    "camera.png",
    "coffee.png",
    "hubble_deep_field.jpg",
    "brick.png",
    "grass.png",
    "gravel.png",
    "coins.png",
    "text.png",
    "motorcycle_left.png",
)

STEPS = 12000
SEED = 0
BATCH_SIZE = 16
PATCH_SIZE = 96
LR = 2e-3


def data_dirs() -> list[Path]:
    """The training photo folders: the samples, scikit-image's photos, the shared black-and-white scans."""
    return [ROOT / "sample_images", SKIMAGE_DATA, SHARED / "photos" / "bw"]


def exclusions() -> set[str]:
    """File names never trained on: the held-out samples and scikit-image's non-photos."""
    keep = set(SKIMAGE_PHOTOS) - set(HELD_OUT)
    others = {p.name for p in list_images(SKIMAGE_DATA) if p.name not in keep}
    return set(HELD_OUT) | others


def main(argv: list[str] | None = None) -> int:
    """Train the built-in model with the command line's settings (resuming when a checkpoint exists)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=STEPS)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--batch-size", type=int, default=BATCH_SIZE)
    ap.add_argument("--patch-size", type=int, default=PATCH_SIZE, help="HR patch side")
    ap.add_argument("--lr", type=float, default=LR)
    ap.add_argument("--out", type=Path, default=BUILTIN_WEIGHTS)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    ap.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    ap.add_argument("--keep-checkpoint", action="store_true", help="keep <out>.ckpt.pt after success")
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    dirs = data_dirs()
    exclude = exclusions()
    print("data folders:", *dirs, sep="\n  ")
    print("held out:", ", ".join(HELD_OUT))
    t0 = time.perf_counter()
    out = train_supervised(
        dirs,
        args.out,
        steps=args.steps,
        seed=args.seed,
        batch_size=args.batch_size,
        patch_size=args.patch_size,
        lr=args.lr,
        exclude=exclude,
        resume=not args.no_resume,
    )
    print(f"done in {time.perf_counter() - t0:.0f} s: {out}")
    if not args.keep_checkpoint:
        checkpoint_path(out).unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
