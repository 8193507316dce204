#!/usr/bin/env python
"""Regenerate sample_images/aged/: an "aged photo" version of every sample image.

    .venv/bin/python scripts/make_aged_samples.py [--seed 0]

Each image goes through ``restorekit.degrade.synthetic.age_photo`` (default AgeConfig: slight
blur, sepia/yellowing, fading, vignette, film grain, JPEG) with the generator
``np.random.default_rng([seed, i])``, i being the image's index in sorted order, and is written
as ``aged/<stem>.jpg`` (JPEG quality 90, to keep the folder small). Same seed, same files.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from restorekit.degrade.synthetic import age_photo  # noqa: E402
from restorekit.core.image import list_images, read_image, write_image  # noqa: E402

SAMPLES = ROOT / "sample_images"
JPEG_QUALITY = 90


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--src", type=Path, default=SAMPLES)
    ap.add_argument("--dst", type=Path, default=SAMPLES / "aged")
    args = ap.parse_args(argv)
    args.dst.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(list_images(args.src)):
        aged = age_photo(read_image(path).rgb, np.random.default_rng([args.seed, i]))
        out = write_image(args.dst / f"{path.stem}.jpg", aged, jpeg_quality=JPEG_QUALITY)
        print(f"{path.name} -> {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
