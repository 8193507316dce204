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

The colour measures (tone to cast) of a photo over ``STATISTICS_PIXELS`` (2 MP) are taken on an
area-averaged copy of 2 MP; noise, blur and blockiness always on every pixel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from restorekit.core.image import as_samples


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


def in_unit_range(rgb: np.ndarray) -> np.ndarray:
    """``rgb`` as float32 in [0, 1]: itself when it already is (no photo-sized copy), else converted
    (integer samples) or clipped."""
    if rgb.dtype.kind == "u":
        return as_samples(rgb, np.float32)
    if rgb.dtype == np.float32 and (rgb.size == 0 or (rgb.min() >= 0.0 and rgb.max() <= 1.0)):
        return rgb
    return np.clip(rgb, 0, 1).astype(np.float32, copy=False)


def lab(rgb: np.ndarray) -> np.ndarray:
    """Float CIELAB (L* 0-100, a*, b* about -128..127) of an RGB float image in [0, 1]."""
    return cv2.cvtColor(in_unit_range(rgb), cv2.COLOR_RGB2Lab)


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


IMMERKAER_KERNEL = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], np.float32)


def noise_sigma(gray255: np.ndarray) -> float:
    """Immerkær (1996): noise std from the response to a Laplacian-difference kernel."""
    return float(_immerkaer(gray255.astype(np.float32, copy=False))[0])


def _immerkaer(img: np.ndarray, band: int = 256) -> np.ndarray:
    """Immerkær's noise std of each channel of an HxW or HxWxC float32 image, filtered a band of
    rows at a time into one reused buffer (no photo-sized copy)."""
    h, w = img.shape[:2]
    channels = 1 if img.ndim == 2 else img.shape[2]
    sums = np.zeros(channels, np.float64)
    buf = None
    for top in range(1, h - 1, band):
        bottom = min(top + band, h - 1)
        rows = img[top - 1:bottom + 1]  # one row of context above and below: the border is never used
        if buf is None or buf.shape != rows.shape:
            buf = np.empty(rows.shape, np.float32)
        cv2.filter2D(rows, -1, IMMERKAER_KERNEL, dst=buf)
        np.abs(buf, out=buf)
        sums += np.array(cv2.sumElems(np.ascontiguousarray(buf[1:-1, 1:-1]))[:channels])
    return np.sqrt(np.pi / 2) * sums / (6 * (w - 2) * (h - 2))


def blockiness(gray255: np.ndarray) -> float:
    """Mean |horizontal + vertical gradient| on 8-px block boundaries over that off them."""
    g = gray255.astype(np.float32, copy=False)
    means = []
    for axis in (1, 0):
        d = np.diff(g, axis=axis)
        np.abs(d, out=d)  # in place: one difference image at a time
        on = d[:, 7::8] if axis == 1 else d[7::8, :]
        total, n_on = float(d.sum(dtype=np.float64)), on.size
        on_sum = float(on.sum(dtype=np.float64))
        means.append((on_sum / n_on if d.shape[axis] > 8 else 0.0,
                      (total - on_sum) / (d.size - n_on) if d.size > n_on else float("nan")))
        del d
    (on_x, off_x), (on_y, off_y) = means
    return float((on_x + on_y) / max(off_x + off_y, 1e-6))


#: The colour measures (tone, chroma, tonal range, contrast, cast) are taken on a copy of at most
#: this many pixels, area-averaged from a larger photo; noise, blur and blockiness on every pixel.
STATISTICS_PIXELS = 2_000_000


def statistics_copy(rgb: np.ndarray, pixels: int = STATISTICS_PIXELS) -> np.ndarray:
    """``rgb`` itself when it has at most ``pixels``, else an area-averaged copy of about that many."""
    h, w = rgb.shape[:2]
    if h * w <= pixels:
        return rgb
    f = (pixels / (h * w)) ** 0.5
    return cv2.resize(rgb, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


def _colour(rgb: np.ndarray) -> dict:
    """The colour measures of :class:`Assessment` (tone to cast), on :func:`statistics_copy`."""
    L = lab(statistics_copy(rgb))
    l, a, b = L[:, :, 0], L[:, :, 1], L[:, :, 2]
    chroma = np.hypot(a, b)
    chroma_p95 = float(np.percentile(chroma, 95))
    coloured = chroma > 3
    if coloured.mean() > 0.02:  # circular spread of the hue angle: cos = a / chroma, sin = b / chroma
        c = chroma[coloured]
        spread = float(np.sqrt(-2 * np.log(max(np.hypot((a[coloured] / c).mean(), (b[coloured] / c).mean()), 1e-6))))
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
    return dict(tone=tone, chroma_p95=chroma_p95, hue_spread=spread, tonal_range=float(hi - lo),
                contrast=float(l.std()), cast_a=ca, cast_b=cb, cast=float(np.hypot(ca, cb)))


def _sharpness(rgb: np.ndarray) -> dict:
    """Blur and blockiness of :class:`Assessment`, on the gray image at full resolution."""
    gray255 = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    gray255 *= 255.0
    return dict(blur=float(cv2.meanStdDev(cv2.Laplacian(gray255, cv2.CV_32F))[1][0, 0] ** 2),
                blockiness=blockiness(gray255))


def assess(rgb: np.ndarray, defect_mask: np.ndarray | None = None) -> Assessment:
    """Measure an RGB photo (HxWx3 float in [0, 1], or uint8 / uint16 samples); colour measures on
    :func:`statistics_copy`, noise, blur and blockiness at full resolution. The three groups run
    side by side on the cores this process may use (numpy and OpenCV release the GIL)."""
    from concurrent.futures import ThreadPoolExecutor

    from restorekit.core.threads import work_threads

    rgb = in_unit_range(rgb)
    noise = lambda: dict(noise_sigma=float(np.median(_immerkaer(rgb)) * 255.0))  # noqa: E731
    groups = (lambda: _colour(rgb), lambda: _sharpness(rgb), noise)
    workers = min(len(groups), work_threads())
    if workers > 1:
        with ThreadPoolExecutor(workers, thread_name_prefix="restorekit-assess") as pool:
            found = [f.result() for f in [pool.submit(g) for g in groups]]
    else:
        found = [g() for g in groups]
    return Assessment(**{k: v for part in found for k, v in part.items()},
                      defects=None if defect_mask is None else float(np.mean(defect_mask)))


def assess_file(path) -> dict:
    """The JSON row of one image file: its path, size, alpha and bit depth, and its measures."""
    from restorekit.core.image import read_image

    photo = read_image(path)
    return {"image": str(path), "size": list(photo.size), "alpha": photo.alpha is not None,
            "bit_depth": photo.bit_depth, **assess(photo.rgb).to_dict()}
