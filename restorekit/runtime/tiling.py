"""Tiled inference with overlap and feathered blending.

Tiles are run at one fixed shape (what Core ML's Neural Engine and TFLite want), adjacent tiles
share ``overlap`` input pixels, and each tile's output is weighted by a window that is zero in
the outer part of the overlap (where the tile edge corrupts the receptive field) and rises
linearly across a narrow band centred on the middle of the overlap. Weights are normalised by
their sum, so irregular overlaps (the last tile of a row is shifted to end at the border) blend correctly too. The image is
processed tile by tile: only one tile at a time is handed to the accelerator.
"""

from __future__ import annotations

import warnings
from typing import Callable

import cv2
import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.image import full_scale
from restorekit.runtime.session import Session


def tile_starts(length: int, tile: int, overlap: int) -> list[int]:
    """Start offsets covering ``[0, length)`` with tiles of ``tile`` sharing >= ``overlap``."""
    if tile >= length:
        return [0]
    stride = tile - overlap
    if stride <= 0:
        raise BadInputError(f"overlap ({overlap}) must be smaller than the tile ({tile})")
    starts = list(range(0, length - tile, stride))
    starts.append(length - tile)
    return starts


#: Width of the blending ramp as a fraction of the overlap. Measured on Real-ESRGAN Compact
#: (receptive radius 18 px): a narrow ramp centred on the seam keeps pixels far from the tile
#: edges (the corrupted ones) out of the blend; 1/8 beat hard paste at overlaps 16, 20 and 32.
RAMP_FRACTION = 0.125


def edge_ramp(n: int, overlap: int, at_start: bool, at_end: bool) -> np.ndarray:
    """1-D blending weights for a tile of ``n`` output pixels; ramps only on interior edges.

    The ramp is centred on the middle of the overlap (where the seam of a hard paste would
    be): zero for the outer ``(overlap - ramp) / 2`` pixels, then a linear rise.
    """
    w = np.ones(n, dtype=np.float32)
    if overlap <= 0:
        return w
    ramp = max(overlap * RAMP_FRACTION, 1.0)
    margin = (overlap - ramp) / 2.0
    d = np.arange(n, dtype=np.float32) + 0.5
    rise = np.clip((d - margin) / ramp, 0.0, 1.0)
    if not at_start:
        w = np.minimum(w, rise)
    if not at_end:
        w = np.minimum(w, rise[::-1])
    return np.maximum(w, 1e-6)  # never exactly zero: every pixel stays defined


#: Without an explicit ``--tile``, a model of dynamic input size runs tiles up to this many times its
#: manifest's tile side: fewer, larger tiles share fewer overlapping pixels (tile 256 overlap 32 runs
#: (256/224)^2 = 1.31x the pixels, tile 512 1.14x) while the cost per pixel stays flat up to 512 px
#: (measured on 2 cores, the built-in int8 model: LiteRT 3.62/3.48 MP/s on 256/512 px photos, each one tile,
#: ONNX Runtime on a 4000x3000 photo 5.54/5.33/5.64 s at tiles 256/384/512; docs/benchmarks.md).
PLAN_TILE_FACTOR = 2


def planned_tile(manifest_tile: int | None, requested: int | None, fixed_size: tuple[int, int] | None) -> int | None:
    """The largest tile side a run may use: the requested ``--tile`` as it is; otherwise, for a model
    of dynamic input size, :data:`PLAN_TILE_FACTOR` times the manifest's tile (a fixed-size model runs
    at its size whatever this says)."""
    if requested:
        return requested
    if manifest_tile and fixed_size is None:
        return manifest_tile * PLAN_TILE_FACTOR
    return manifest_tile


def spread_side(length: int, max_side: int, overlap: int, multiple_of: int = 1) -> int:
    """The side of the fewest tiles no longer than ``max_side`` (rounded up to ``multiple_of``) that cover ``length`` with at least
    ``overlap`` shared pixels, all of one size (a multiple of ``multiple_of``): the same number of
    model calls as tiles of ``max_side``, and no more pixels than needed (4000 px in tiles up to 512
    with overlap 32: 9 tiles of 473, not 9 of 512)."""
    m = max(int(multiple_of), 1)
    max_side = -(-max_side // m) * m  # tiles are multiples of m: so is the largest
    whole = -(-length // m) * m
    if whole <= max_side or overlap >= max_side:  # the second: refused by the caller's overlap check
        return min(whole, max_side)
    n = -(-(length - overlap) // (max_side - overlap))
    return -(-(-(-(length - overlap) // n) + overlap) // m) * m  # <= max_side: both are multiples of m


def tile_grid(fixed_size: tuple[int, int] | None, h: int, w: int, tile: int | None, overlap: int,
              multiple_of: int = 1) -> tuple[int, int, list[int], list[int]]:
    """The tiles :func:`run_tiled` runs on an ``h`` x ``w`` image: tile height and width, and the
    start rows and columns (of the image padded to at least one tile)."""
    m = max(int(multiple_of), 1)
    if fixed_size is not None:
        th, tw = fixed_size
    elif tile:  # a dynamic model: the fewest tiles up to ``tile`` per side, spread evenly over each axis
        side = -(-int(tile) // m) * m
        th, tw = spread_side(h, side, overlap, m), spread_side(w, side, overlap, m)
    else:
        th, tw = -(-h // m) * m, -(-w // m) * m
    if overlap >= min(th, tw) and (h > th or w > tw):
        raise BadInputError(f"overlap ({overlap}) must be smaller than the tile ({min(th, tw)})")
    return th, tw, tile_starts(max(h, th), th, overlap), tile_starts(max(w, tw), tw, overlap)


def pad_to(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """Reflect-pad an HxWxC image at the bottom/right up to (height, width)."""
    ph, pw = height - img.shape[0], width - img.shape[1]
    if ph <= 0 and pw <= 0:
        return img
    return np.pad(img, ((0, max(ph, 0)), (0, max(pw, 0)), (0, 0)), mode="symmetric")


def check_requested_tile(tile: int | None, fixed_size: tuple[int, int] | None, multiple_of: int) -> None:
    """Say (a warning) when a requested ``--tile`` does not fit the model's size rules: a model with
    a fixed input runs at that size whatever is asked, and other tiles are rounded up to a multiple
    of ``multiple_of``."""
    if not tile:
        return
    if fixed_size is not None and tuple(fixed_size) != (tile, tile):
        warnings.warn(f"--tile {tile} is not used: this bundle's model has a fixed {fixed_size[1]}x{fixed_size[0]} "
                      "input, and runs in tiles of that size", RuntimeWarning, stacklevel=3)
    elif fixed_size is None and multiple_of > 1 and tile % multiple_of:
        warnings.warn(f"--tile {tile} is not a multiple of {multiple_of} (the model's size rule): tiles of "
                      f"{-(-tile // multiple_of) * multiple_of} are used", RuntimeWarning, stacklevel=3)


def check_overlap(overlap: int, tile: int | None) -> None:
    """Refuse an overlap of more than half the tile: tiles then start fewer than ``tile - overlap``
    pixels apart and each pixel runs through about ``(tile / (tile - overlap))**2`` tiles (``--tile
    32 --overlap 31``: 1024 times, 256 times the work at overlap 16). Exactly half is allowed with a
    warning that says its cost."""
    if tile and 2 * overlap == tile:
        warnings.warn(f"overlap {overlap} is half the tile ({tile}): each pixel runs through about 4 tiles, "
                      f"{4 / (tile / (tile - tile // 8)) ** 2:.1f}x the work of an overlap of {tile // 8}",
                      RuntimeWarning, stacklevel=3)
    if tile and 2 * overlap > tile:
        per_pixel = (tile / max(tile - overlap, 1)) ** 2
        raise BadInputError(f"overlap {overlap} is more than half the tile ({tile}): each pixel would run through "
                            f"about {per_pixel:.0f} tiles, {per_pixel / 4:.0f}x the work at overlap {tile // 2}; "
                            f"use an overlap of at most {tile // 2}")


def _store_rows(rows: np.ndarray, norm: np.ndarray, full: float | None, out: np.ndarray) -> None:
    """``rows`` (CxRxW blended sums) times ``norm`` (RxW, one over the weight sums) into ``out`` (RxWxC),
    one OpenCV pass per channel: float32 as it is (``full`` None), or integer samples of ``full`` scale
    (uint8 / uint16) rounded to nearest and saturated."""
    depth = cv2.CV_32F if full is None else cv2.CV_8U if out.dtype == np.uint8 else cv2.CV_16U
    planes = [cv2.multiply(plane, norm, scale=full or 1.0, dtype=depth) for plane in rows]  # rows: contiguous along W
    if len(planes) == 1:
        out[:, :, 0] = planes[0]
    else:
        cv2.merge(planes, dst=out)


def _weigh(y: np.ndarray, wy: np.ndarray, wx: np.ndarray) -> None:
    """Multiply a CxHxW tile by its blending weight ``wy (x) wx``, in place and only where the
    weights are not 1: the ramps at the tile's edges (most of a tile keeps weight 1)."""
    for axis, ramp in ((1, wy), (2, wx)):
        ramped = np.flatnonzero(ramp != 1.0)
        if ramped.size == 0:
            continue
        n = ramp.size
        head = ramped[ramped < n // 2]
        tail = ramped[ramped >= n // 2]
        for part in (slice(0, head[-1] + 1) if head.size else None, slice(tail[0], n) if tail.size else None):
            if part is None:
                continue
            view = y[:, part] if axis == 1 else y[:, :, part]
            view *= ramp[part][:, None] if axis == 1 else ramp[part][None, :]


def run_tiled(
    session: Session,
    rgb: np.ndarray,
    scale: int,
    tile: int | None = 256,
    overlap: int = 32,
    multiple_of: int = 1,
    on_tile: Callable[[int, int], None] | None = None,
    out_dtype: type | np.dtype = np.float32,
) -> np.ndarray:
    """Run ``session`` over an HxWx3 image in tiles; returns (H*scale)x(W*scale)xC, C the model's
    output channels (3 for restoration, 1 for a mask).

    ``rgb`` is float in [0, 1] or integer samples (uint8 / uint16: each tile is converted to float
    on its own). The output is ``out_dtype``: float32 (unclipped), or uint8 / uint16 (clipped,
    rounded). Tiles run row by row and each finished band of output rows is blended into the
    output at once, so beyond the output itself memory holds one band of tiles (``tile * scale``
    rows of float32), not a float copy of the whole output.

    A session of fixed input size runs tiles of that size. A dynamic one runs the fewest tiles of at
    most ``tile`` per side, spread evenly over each axis (:func:`spread_side`; the whole image when it
    fits); ``tile`` None (or 0) runs the whole image at once.
    ``on_tile(done, total)`` is called after each tile (for progress bars).
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise BadInputError(f"expected an HxWx3 image, got shape {rgb.shape}")
    in_scale = full_scale(rgb.dtype)
    out_dtype = np.dtype(out_dtype)
    out_scale = full_scale(out_dtype)
    h, w = rgb.shape[:2]
    th, tw, ys, xs = tile_grid(session.fixed_size, h, w, tile, overlap, multiple_of)
    padded = pad_to(rgb, max(h, th), max(w, tw))
    ph, pw = padded.shape[:2]
    # The tiles form a grid and each tile's weight is wy (its row) x wx (its column), so the sum of
    # the weights at a pixel is (sum of the rows' wy) x (sum of the columns' wx): two 1-D sums, not
    # an output-sized buffer.
    ramps_y = {y0: edge_ramp(th * scale, overlap * scale, y0 == 0, y0 + th >= ph) for y0 in ys}
    ramps_x = {x0: edge_ramp(tw * scale, overlap * scale, x0 == 0, x0 + tw >= pw) for x0 in xs}
    wsum_y, wsum_x = np.zeros(ph * scale, np.float32), np.zeros(pw * scale, np.float32)
    for y0, wy in ramps_y.items():
        wsum_y[y0 * scale:(y0 + th) * scale] += wy
    for x0, wx in ramps_x.items():
        wsum_x[x0 * scale:(x0 + tw) * scale] += wx
    out = band = None  # allocated at the first tile, with the model's output channels
    band_rows = th * scale  # the band holds the output rows of one row of tiles, from its first row
    total, done = len(ys) * len(xs), 0
    for i, y0 in enumerate(ys):
        wy = ramps_y[y0]
        for x0 in xs:
            x = padded[y0 : y0 + th, x0 : x0 + tw].transpose(2, 0, 1)[None]
            # to float NCHW in one pass (integer samples scaled to [0, 1] on the way)
            x = np.divide(x, np.float32(in_scale), dtype=np.float32, order="C") if in_scale \
                else x.astype(np.float32, order="C")
            y = session.run(x)[0]  # C x th*scale x tw*scale: blended in the model's own layout
            if y.shape[1:] != (th * scale, tw * scale):
                raise BadInputError(
                    f"model returned {y.shape[2]}x{y.shape[1]} for a {tw}x{th} tile; expected scale {scale}"
                )
            if out is None:
                out = np.empty((h * scale, w * scale, y.shape[0]), dtype=out_dtype)
                band = np.zeros((y.shape[0], band_rows, pw * scale), dtype=np.float32)
            if not y.flags.writeable or y.dtype != np.float32:
                y = y.astype(np.float32)
            _weigh(y, wy, ramps_x[x0])
            band[:, :, x0 * scale:(x0 + tw) * scale] += y
            done += 1
            if on_tile:
                on_tile(done, total)
        # rows above the next row of tiles get nothing more: blend them into the output, keep the rest
        finished = (ys[i + 1] - y0) * scale if i + 1 < len(ys) else band_rows
        top, bottom = y0 * scale, min(y0 * scale + finished, h * scale)
        if bottom > top:
            rows = band[:, : bottom - top, : w * scale]
            norm = (1.0 / wsum_y[top:bottom])[:, None] / wsum_x[None, : w * scale]
            _store_rows(rows, norm, out_scale, out[top:bottom])  # normalised (and rounded) per channel
        keep = band_rows - finished
        band[:, :keep] = band[:, finished:]  # numpy buffers the copy itself when the two overlap
        band[:, keep:] = 0.0
    return out
