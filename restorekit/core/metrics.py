"""Image metrics on float images in [0, 1] (numpy + OpenCV only)."""

from __future__ import annotations

import cv2
import numpy as np

PSNR_CAP_DB = 150.0  # identical images: report a large finite number, not inf


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 1.0) -> float:
    """Peak signal-to-noise ratio in dB (capped at PSNR_CAP_DB for identical inputs)."""
    return psnr_from_mse(float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)), peak)


def psnr_from_mse(mse: float, peak: float = 1.0) -> float:
    """PSNR in dB of a mean squared error (a training loss, say), capped like :func:`psnr`."""
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


def ciede2000(lab1: np.ndarray, lab2: np.ndarray) -> np.ndarray:
    """CIEDE2000 colour difference per pixel between two CIELAB arrays (..., 3), L in 0-100.

    Written from Sharma, Wu & Dalal (2005), "The CIEDE2000 colour-difference formula:
    implementation notes", with kL = kC = kH = 1.
    """
    lab1 = np.asarray(lab1, np.float64)
    lab2 = np.asarray(lab2, np.float64)
    l1, a1, b1 = np.moveaxis(lab1, -1, 0)
    l2, a2, b2 = np.moveaxis(lab2, -1, 0)
    c_bar7 = ((np.hypot(a1, b1) + np.hypot(a2, b2)) / 2) ** 7
    g = 0.5 * (1 - np.sqrt(c_bar7 / (c_bar7 + 25.0**7)))
    a1p, a2p = (1 + g) * a1, (1 + g) * a2
    c1p, c2p = np.hypot(a1p, b1), np.hypot(a2p, b2)
    h1p = np.degrees(np.arctan2(b1, a1p)) % 360
    h2p = np.degrees(np.arctan2(b2, a2p)) % 360
    chroma0 = (c1p * c2p) == 0

    dh = h2p - h1p
    dh = np.where(dh > 180, dh - 360, np.where(dh < -180, dh + 360, dh))
    dh = np.where(chroma0, 0.0, dh)
    d_l = l2 - l1
    d_c = c2p - c1p
    d_h = 2 * np.sqrt(c1p * c2p) * np.sin(np.radians(dh / 2))

    l_bar = (l1 + l2) / 2
    c_bar_p = (c1p + c2p) / 2
    h_sum = h1p + h2p
    h_bar = np.where(np.abs(h1p - h2p) <= 180, h_sum / 2, np.where(h_sum < 360, (h_sum + 360) / 2, (h_sum - 360) / 2))
    h_bar = np.where(chroma0, h_sum, h_bar)

    t = (1 - 0.17 * np.cos(np.radians(h_bar - 30)) + 0.24 * np.cos(np.radians(2 * h_bar))
         + 0.32 * np.cos(np.radians(3 * h_bar + 6)) - 0.20 * np.cos(np.radians(4 * h_bar - 63)))
    d_theta = 30 * np.exp(-(((h_bar - 275) / 25) ** 2))
    c_bar_p7 = c_bar_p**7
    r_c = 2 * np.sqrt(c_bar_p7 / (c_bar_p7 + 25.0**7))
    s_l = 1 + 0.015 * (l_bar - 50) ** 2 / np.sqrt(20 + (l_bar - 50) ** 2)
    s_c = 1 + 0.045 * c_bar_p
    s_h = 1 + 0.015 * c_bar_p * t
    r_t = -np.sin(np.radians(2 * d_theta)) * r_c
    return np.sqrt((d_l / s_l) ** 2 + (d_c / s_c) ** 2 + (d_h / s_h) ** 2 + r_t * (d_c / s_c) * (d_h / s_h))


def delta_e00(a: np.ndarray, b: np.ndarray) -> float | None:
    """Mean CIEDE2000 difference between two sRGB float images in [0, 1] (HxWx3, RGB order);
    None for images that are not RGB (a mask has no colour)."""
    if a.ndim != 3 or a.shape[2] != 3:
        return None
    to_lab = lambda im: cv2.cvtColor(np.clip(np.nan_to_num(im), 0, 1).astype(np.float32), cv2.COLOR_RGB2Lab)  # noqa: E731
    return float(ciede2000(to_lab(a), to_lab(b)).mean())


CLIP_EPS = 0.5 / 255  # within half an 8-bit step of 0 or 1 counts as clipped


def clipped(img: np.ndarray) -> np.ndarray:
    """Per-pixel mask (HxW): some channel at black or white (within half an 8-bit step)."""
    img = np.atleast_3d(img)
    return ((img <= CLIP_EPS) | (img >= 1 - CLIP_EPS)).any(axis=2)


def new_clipped(out: np.ndarray, ref: np.ndarray) -> int:
    """Pixels clipped in ``out`` that the reference does not clip (new crushed blacks or
    blown highlights: a known int8 failure)."""
    return int(np.count_nonzero(clipped(np.nan_to_num(out, nan=0.5)) & ~clipped(ref)))
