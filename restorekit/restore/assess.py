"""Damage assessment of an old photo: what kind of print it is and what is wrong with it.

numpy + OpenCV only. Every measure is a plain number with a documented scale, so the JSON log
is readable and the choices of the restore pipeline (``restore.pipeline``) can be explained:

* ``tone``: ``bw`` (no chroma), ``sepia`` (weak chroma of one warm hue, a*b* hue angle 20-90°:
  brown to yellow; a greenish autochrome is colour) or ``colour``;
* ``tonal_range``: L* (0-100) between the 1st and 99th percentiles; faded prints have < 75;
* ``contrast``: standard deviation of L*;
* ``cast_a``, ``cast_b``, ``cast``: mean a*, b* of the likely-neutral mid-tones (``neutral_cast``)
  and its magnitude (a neutral print is near 0);
* ``noise_sigma``: Gaussian noise std in 8-bit levels (Immerkær's fast estimator on each RGB
  channel, median of the three);
* ``blur``: variance of the Laplacian of the gray image on the 8-bit scale (sharp > 100);
* ``blockiness``: gradient energy across the 8x8 JPEG grid over that elsewhere (1 = none);
* ``defects``: fraction of pixels the scratch/dust detector marks.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np


@dataclass
class Assessment:
    """The measures of one photo (scales in the module docstring)."""

    tone: str
    chroma_p95: float
    hue_spread: float
    tonal_range: float
    contrast: float
    cast_a: float
    cast_b: float
    cast: float
    noise_sigma: float
    blur: float
    blockiness: float
    defects: float | None = None

    def to_dict(self) -> dict:
        """The measures as a JSON-ready dict, floats rounded to 4 decimals."""
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def lab(rgb: np.ndarray) -> np.ndarray:
    """Float CIELAB (L* 0-100, a*, b* about -128..127) of an RGB float image in [0, 1]."""
    return cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)


def neutral_cast(L: np.ndarray) -> tuple[float, float]:
    """Mean a*, b* of the pixels most likely to be neutral surfaces: mid-tones (L* 25-80) with the
    lowest 30 % chroma. A scene that is mostly one colour (foliage) does not read as a cast."""
    l, a, b = L[:, :, 0], L[:, :, 1], L[:, :, 2]
    mid = (l > 25) & (l < 80)
    if not mid.any():
        mid = np.ones(l.shape, bool)
    chroma = np.hypot(a, b)
    sel = mid & (chroma <= np.percentile(chroma[mid], 30))
    return float(a[sel].mean()), float(b[sel].mean())


def noise_sigma(gray255: np.ndarray) -> float:
    """Immerkær (1996): noise std from the response to a Laplacian-difference kernel."""
    k = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)
    h, w = gray255.shape
    conv = cv2.filter2D(gray255.astype(np.float32), -1, k)[1:-1, 1:-1]
    return float(np.sqrt(np.pi / 2) * np.abs(conv).sum() / (6 * (w - 2) * (h - 2)))


def blockiness(gray255: np.ndarray) -> float:
    """Mean |horizontal + vertical gradient| on 8-px block boundaries over that off them."""
    g = gray255.astype(np.float32)
    dx, dy = np.abs(np.diff(g, axis=1)), np.abs(np.diff(g, axis=0))
    on_x, on_y = dx[:, 7::8].mean() if dx.shape[1] > 8 else 0.0, dy[7::8, :].mean() if dy.shape[0] > 8 else 0.0
    off_x = np.delete(dx, np.s_[7::8], axis=1).mean()
    off_y = np.delete(dy, np.s_[7::8], axis=0).mean()
    return float((on_x + on_y) / max(off_x + off_y, 1e-6))


def assess(rgb: np.ndarray, defect_mask: np.ndarray | None = None) -> Assessment:
    """Measure an RGB float photo (HxWx3 in [0, 1])."""
    L = lab(rgb)
    l, a, b = L[:, :, 0], L[:, :, 1], L[:, :, 2]
    chroma = np.hypot(a, b)
    chroma_p95 = float(np.percentile(chroma, 95))
    coloured = chroma > 3
    if coloured.mean() > 0.02:
        hue = np.arctan2(b[coloured], a[coloured])
        spread = float(np.sqrt(-2 * np.log(max(np.hypot(np.cos(hue).mean(), np.sin(hue).mean()), 1e-6))))
    else:
        spread = 0.0
    mean_hue = np.degrees(np.arctan2(b.mean(), a.mean()))
    if chroma_p95 < 4:
        tone = "bw"
    elif spread < 0.45 and 20 <= mean_hue <= 90 and chroma_p95 < 35:  # one warm hue: orange to yellow-brown
        tone = "sepia"
    else:
        tone = "colour"
    lo, hi = np.percentile(l, [1, 99])
    ca, cb = neutral_cast(L)
    gray255 = cv2.cvtColor(np.clip(rgb, 0, 1).astype(np.float32), cv2.COLOR_RGB2GRAY) * 255.0
    return Assessment(
        tone=tone, chroma_p95=chroma_p95, hue_spread=spread, tonal_range=float(hi - lo), contrast=float(l.std()),
        cast_a=ca, cast_b=cb, cast=float(np.hypot(ca, cb)),
        noise_sigma=float(np.median([noise_sigma(np.clip(rgb[:, :, c], 0, 1) * 255.0) for c in range(3)])),
        blur=float(cv2.Laplacian(gray255, cv2.CV_32F).var()), blockiness=blockiness(gray255),
        defects=None if defect_mask is None else float(np.mean(defect_mask)),
    )


def assess_file(path) -> dict:
    """The JSON row of one image file: its path, size, alpha and bit depth, and its measures."""
    from restorekit.core.image import read_image

    photo = read_image(path)
    return {"image": str(path), "size": list(photo.size), "alpha": photo.alpha is not None,
            "bit_depth": photo.bit_depth, **assess(photo.rgb).to_dict()}
