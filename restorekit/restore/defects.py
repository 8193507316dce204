"""Scratch/dust/tear masks from a detector session, and inpainting of the masked pixels.

Torch-free: the detector is any Session whose output is a 1-channel probability map at the
input's size (the ScratchUNet student through PyTorch, or a converted bundle of it).
"""

from __future__ import annotations

import cv2
import numpy as np

from restorekit.core.image import as_samples
from restorekit.runtime.session import Session
from restorekit.runtime.task_io import with_mask
from restorekit.runtime.tiling import pad_to, run_tiled

INPAINT_TILE = 256  # window side for a dynamic-shape inpainter whose manifest gives no tile


def detect_defects(session: Session, rgb: np.ndarray, tile: int = 512, overlap: int = 32) -> np.ndarray:
    """HxW float32 probability that each pixel is a scratch, hair, dust speck or tear.

    Large photos run in overlapping, feathered tiles (sizes rounded to the net's multiple of 4)."""
    prob = run_tiled(session, rgb, scale=1, tile=tile, overlap=overlap, multiple_of=4)[:, :, 0]
    return np.clip(prob, 0.0, 1.0, out=prob)


def inpaint(rgb: np.ndarray, mask: np.ndarray, radius: int = 3, method: str = "telea",
            in_place: bool = False) -> np.ndarray:
    """Fill the ``mask`` pixels from their surroundings (OpenCV Telea or Navier-Stokes) on the 8-bit
    samples of ``rgb`` (float in [0, 1], or uint8 / uint16 samples, returned in that type); the rest of
    the image is returned unchanged. With ``in_place`` the filled pixels are written into ``rgb``
    itself (an array the caller owns)."""
    if not mask.any():
        return rgb
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    src = np.ascontiguousarray(as_samples(rgb, np.uint8))  # uint8 photos as they are: no float round trip
    marks = mask.view(np.uint8) if mask.dtype == bool else mask.astype(np.uint8)
    filled = cv2.inpaint(src, marks, radius, flag)  # each channel on its own: RGB order as it comes
    out = rgb if in_place else rgb.copy()
    out[mask] = as_samples(filled[mask], rgb.dtype)
    return out


def inpaint_with_model(session: Session, rgb: np.ndarray, hole: np.ndarray, tile: int = INPAINT_TILE,
                       multiple_of: int = 1) -> np.ndarray:
    """Fill the ``hole`` pixels with an inpainting model (RGB + mask in, RGB out).

    Each damaged region (holes closer than an eighth of a window are one region) is cut out
    with its surroundings in windows of the model's size centred on it (a grid of overlapping
    windows over a region larger than one); only hole pixels are pasted back, blended where
    windows overlap with weights that fall towards each window's border. Every other pixel is
    returned unchanged."""
    if not hole.any():
        return rgb
    h, w = rgb.shape[:2]
    fixed = session.fixed_size
    m = max(int(multiple_of), 1)
    th, tw = tuple(fixed) if fixed is not None else (-(-tile // m) * m,) * 2
    ph, pw = max(h, th), max(w, tw)
    padded = pad_to(rgb, ph, pw)
    holes = np.zeros((ph, pw), bool)
    holes[:h, :w] = hole
    acc = np.zeros((ph, pw, 3), np.float32)
    wsum = np.zeros((ph, pw), np.float32)
    ramp = np.outer(_ramp(th), _ramp(tw))
    for y0, x0 in _windows(holes, th, tw):
        sub = holes[y0:y0 + th, x0:x0 + tw]
        x = with_mask(padded[y0:y0 + th, x0:x0 + tw], sub).transpose(2, 0, 1)[None]
        out = session.run(np.ascontiguousarray(x, dtype=np.float32))[0].transpose(1, 2, 0)
        weight = ramp * sub
        acc[y0:y0 + th, x0:x0 + tw] += out[:, :, :3] * weight[:, :, None]
        wsum[y0:y0 + th, x0:x0 + tw] += weight
    result = rgb.copy()
    filled = hole & (wsum[:h, :w] > 0)
    result[filled] = np.clip(acc[:h, :w][filled] / wsum[:h, :w][filled][:, None], 0.0, 1.0)
    return inpaint(result, hole & ~filled)  # nothing is left in practice; never an unfilled hole


def _ramp(n: int) -> np.ndarray:
    """1 in the middle of a window, falling linearly to 0.05 at its border (over a quarter of it)."""
    edge = np.minimum(np.arange(n) + 0.5, n - np.arange(n) - 0.5) / max(n / 4.0, 1.0)
    return np.clip(edge, 0.05, 1.0).astype(np.float32)


def _windows(holes: np.ndarray, th: int, tw: int) -> list[tuple[int, int]]:
    """Top-left corners of the windows that cover every damaged region with context."""
    ph, pw = holes.shape
    near = cv2.dilate(holes.astype(np.uint8), np.ones((max(th // 8, 1),) * 2, np.uint8))
    count, _, stats, _ = cv2.connectedComponentsWithStats(near, connectivity=8)
    corners: set[tuple[int, int]] = set()
    for x, y, bw, bh, _ in stats[1:count]:
        ys = _starts(int(y), int(bh), th, ph)
        xs = _starts(int(x), int(bw), tw, pw)
        corners.update((y0, x0) for y0 in ys for x0 in xs)
    return sorted(corners)


def _starts(lo: int, extent: int, size: int, limit: int) -> list[int]:
    """Window starts along one axis: one window centred on [lo, lo + extent) when it fits with a
    margin, else windows overlapping by a quarter from the region's start to its end."""
    clamp = lambda v: int(min(max(v, 0), limit - size))  # noqa: E731
    if extent <= size * 3 // 4:
        return [clamp(lo + extent // 2 - size // 2)]
    step = max(size * 3 // 4, 1)
    starts = list(range(lo - size // 8, lo + extent - size + size // 8 + step, step))
    return sorted({clamp(v) for v in starts})
