"""Calibration data: random tiles of real photos (never noise: noise calibration loses ~13 dB)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.image import list_images, read_image
from restorekit.runtime.tiling import pad_to


def calibration_tiles(folder: str | Path, tile: int = 128, count: int = 32, seed: int = 0) -> list[np.ndarray]:
    """``count`` random ``tile`` x ``tile`` crops (NCHW float32, batch 1) from the photos in ``folder``.

    Crops are spread evenly over the images; unreadable files are skipped with a warning naming each; a folder with no
    readable image is an error. The first crop is contrast-stretched to the full [0, 1] range so
    that min-max calibration of the input (and of the clamped output) can reach pure black and
    pure white: a calibration set without a white pixel makes white unreachable in int8.
    """
    photos = []
    for p in list_images(folder):
        try:
            photos.append(read_image(p).rgb)
        except BadInputError as exc:  # named, never dropped in silence
            warnings.warn(f"calibration photo skipped: {exc}", stacklevel=2)
            continue
    if not photos:
        raise BadInputError(f"no readable images in calibration folder {folder}")
    rng = np.random.default_rng(seed)
    tiles = []
    for i in range(count):
        img = pad_to(photos[i % len(photos)], tile, tile)
        y = int(rng.integers(0, img.shape[0] - tile + 1))
        x = int(rng.integers(0, img.shape[1] - tile + 1))
        crop = img[y : y + tile, x : x + tile]
        if i == 0:
            lo, hi = crop.min(axis=(0, 1)), crop.max(axis=(0, 1))
            crop = (crop - lo) / np.maximum(hi - lo, 1e-6)
        tiles.append(np.ascontiguousarray(crop.transpose(2, 0, 1)[None], dtype=np.float32))
    return tiles
