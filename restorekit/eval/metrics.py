"""Image metrics on float images in [0, 1] (numpy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

PSNR_CAP_DB = 150.0  # identical images: report a large finite number, not inf


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at PSNR_CAP_DB for identical inputs)."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    if not np.isfinite(mse):
        return float("nan")
    if mse <= 10 ** (-PSNR_CAP_DB / 10) * peak * peak:
        return PSNR_CAP_DB
    return float(10.0 * np.log10(peak * peak / mse))


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5), averaged over channels."""
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    a = np.atleast_3d(a).astype(np.float64)
    b = np.atleast_3d(b).astype(np.float64)
    vals = []
    for ch in range(a.shape[2]):
        x, y = a[:, :, ch], b[:, :, ch]
        blur = lambda t: cv2.GaussianBlur(t, (11, 11), 1.5)  # noqa: E731
        mx, my = blur(x), blur(y)
        sxx, syy, sxy = blur(x * x) - mx * mx, blur(y * y) - my * my, blur(x * y) - mx * my
        s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
        vals.append(float(s[5:-5, 5:-5].mean()) if min(s.shape) > 10 else float(s.mean()))
    return float(np.mean(vals))


def max_abs_err(a: np.ndarray, b: np.ndarray) -> float:
    """Largest absolute difference (non-finite values ignored)."""
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    d = d[np.isfinite(d)]
    return float(d.max()) if d.size else float("nan")


def nonfinite(a: np.ndarray) -> int:
    """Count of NaN/inf values."""
    return int(np.size(a) - np.count_nonzero(np.isfinite(a)))
