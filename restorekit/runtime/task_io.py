"""What the colorize and inpaint models take and give beyond an RGB image. Torch-free.

- colorize (DDColor): the model sees the photo's CIELAB lightness rendered as gray RGB
  (a* = b* = 0), at its input size, and predicts a*, b* as ``(ab + 128) / 255``; the predicted
  ab is resized to the photo and merged with the photo's own full-resolution L.
- inpaint (LaMa): the model takes RGB + hole mask (1 = fill) as one 4-channel tensor.

``example_input`` turns RGB crops (NCHW) into the input a model of each task takes: what
validation, calibration and benchmarks feed a bundle.
"""

from __future__ import annotations

import cv2
import numpy as np

AB_OFFSET, AB_SPAN = 128.0, 255.0  # a colorizer's output o in [0, 1] <-> ab = o * 255 - 128 (Lab units)
GAMUT_TOLERANCE = 1e-3  # RGB overshoot (of 1) still counted in gamut: 1/4 of an 8-bit step


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (L in 0..100, a*, b* in Lab units) of an HxWx3 float RGB image in [0, 1]."""
    return cv2.cvtColor(np.ascontiguousarray(rgb, dtype=np.float32), cv2.COLOR_RGB2LAB)


def gray_rgb(rgb: np.ndarray) -> np.ndarray:
    """The photo's lightness alone, rendered as RGB (a* = b* = 0): what DDColor takes."""
    lab_img = lab(rgb)
    lab_img[:, :, 1:] = 0.0
    return np.clip(cv2.cvtColor(lab_img, cv2.COLOR_LAB2RGB), 0.0, 1.0)


def merge_ab(rgb: np.ndarray, ab_out: np.ndarray) -> np.ndarray:
    """``rgb``'s own full-resolution L with a colorizer's output (HxWx2, ``(ab + 128) / 255``, any
    size: resized bilinearly to the photo), as RGB in [0, 1]; out-of-gamut colours lose chroma,
    never lightness."""
    h, w = rgb.shape[:2]
    ab = np.asarray(ab_out, np.float32) * AB_SPAN - AB_OFFSET
    if ab.shape[:2] != (h, w):
        ab = cv2.resize(ab, (w, h), interpolation=cv2.INTER_LINEAR)
    return lab_to_rgb_keeping_lightness(lab(rgb)[:, :, 0], ab)


def lab_to_rgb_keeping_lightness(lightness: np.ndarray, ab: np.ndarray, steps: int = 10) -> np.ndarray:
    """RGB of (L*, a*, b*) where the colour is in the sRGB gamut; elsewhere of the same L* and hue
    with the largest chroma that is (found by bisection), so that clipping never changes L*."""
    def fits(k: np.ndarray) -> np.ndarray:  # OpenCV clips its Lab -> RGB: the gamut test needs the raw values
        linear = _linear_rgb(lightness, ab * k[:, :, None])
        return ((linear >= -GAMUT_TOLERANCE) & (linear <= 1.0 + GAMUT_TOLERANCE)).all(axis=2)

    ones = np.ones(lightness.shape, np.float32)
    scale = ones
    outside = ~fits(ones)
    if outside.any():
        lo, hi = np.zeros_like(ones), ones.copy()
        for _ in range(steps):
            mid = (lo + hi) / 2
            ok = fits(mid)
            lo, hi = np.where(ok, mid, lo), np.where(ok, hi, mid)
        scale = np.where(outside, lo, ones)
    merged = np.dstack([lightness, ab * scale[:, :, None]]).astype(np.float32)
    return np.clip(cv2.cvtColor(merged, cv2.COLOR_LAB2RGB), 0.0, 1.0)


# CIE XYZ (D65) -> linear sRGB, and the D65 white point, as OpenCV's Lab conversion uses them
_XYZ_TO_RGB = np.array([[3.240479, -1.53715, -0.498535], [-0.969256, 1.875991, 0.041556],
                        [0.055648, -0.204043, 1.057311]], np.float32)
_WHITE = np.array([0.950456, 1.0, 1.088754], np.float32)


def _linear_rgb(lightness: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """Linear sRGB of CIELAB, unclipped (negative or above 1 outside the gamut)."""
    fy = (lightness + 16.0) / 116.0
    f = np.stack([fy + ab[:, :, 0] / 500.0, fy, fy - ab[:, :, 1] / 200.0], axis=2)
    xyz = np.where(f > 6.0 / 29.0, f ** 3, 3.0 * (6.0 / 29.0) ** 2 * (f - 4.0 / 29.0)) * _WHITE
    return xyz @ _XYZ_TO_RGB.T


def with_mask(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """HxWx4: RGB and the hole mask (1 = fill) as the 4th channel, what an inpainter takes."""
    return np.concatenate([rgb, mask.astype(np.float32)[:, :, None]], axis=2)


def scratch_mask(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A deterministic HxW float mask of a few scratches and a blotch (1 = hole), ~3-6 % of the area."""
    rng = np.random.default_rng(seed)
    mask = np.zeros((h, w), np.uint8)
    for _ in range(3):
        p0 = (int(rng.integers(0, w)), 0)
        p1 = (int(rng.integers(0, w)), h - 1)
        cv2.line(mask, p0, p1, 1, int(rng.integers(2, max(3, min(h, w) // 40 + 3))))
    centre = (int(rng.integers(w // 4, 3 * w // 4 + 1)), int(rng.integers(h // 4, 3 * h // 4 + 1)))
    cv2.ellipse(mask, centre, (max(2, w // 12), max(2, h // 16)), float(rng.integers(0, 180)), 0, 360, 1, -1)
    return mask.astype(np.float32)


def example_input(task: str, x: np.ndarray, seed: int = 0) -> np.ndarray:
    """The NCHW input a ``task`` model takes, made from an NCHW RGB crop ``x``: gray RGB for
    colorize, RGB + a scratch mask for inpaint, ``x`` itself for every other task."""
    if task == "colorize":
        return np.ascontiguousarray(gray_rgb(x[0].transpose(1, 2, 0)).transpose(2, 0, 1)[None], dtype=np.float32)
    if task == "inpaint":
        rgb = x[0].transpose(1, 2, 0)
        both = with_mask(rgb, scratch_mask(rgb.shape[0], rgb.shape[1], seed))
        return np.ascontiguousarray(both.transpose(2, 0, 1)[None], dtype=np.float32)
    return x


def viewable(task: str, x: np.ndarray, model_input: np.ndarray | None = None) -> np.ndarray:
    """An NCHW tensor of a ``task`` model (its input or output) as an NCHW RGB picture: a
    colorizer's ab merged with the L of ``model_input``, an inpainter's input with its holes in
    red, a 1-channel mask as gray; RGB tensors unchanged."""
    channels = x.shape[1]
    hwc = x[0].transpose(1, 2, 0)
    if task == "colorize" and channels == 2 and model_input is not None:
        rgb = merge_ab(model_input[0, :3].transpose(1, 2, 0), hwc)
    elif channels == 4:
        rgb = np.where(hwc[:, :, 3:] > 0.5, np.array([1.0, 0.0, 0.0], np.float32), hwc[:, :, :3])
    elif channels == 1:
        rgb = np.repeat(hwc, 3, axis=2)
    else:
        return x
    return np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
