"""Synthetic degradations: clean photo -> what a restoration model really gets.

Everything here is numpy + OpenCV (no torch), works on float32 images in [0, 1] (HxWx3 RGB, or
HxW gray), and takes all its randomness from an ``np.random.Generator``: the same generator state
gives the same output, bit for bit.

Two pipelines are built from the same small effect functions:

* :func:`degrade_pair` - clean high-resolution image -> degraded low-resolution input for
  training and evaluating a ``scale``-x restoration model:
  ``blur (HR) -> downscale -> gaussian noise -> film grain -> JPEG -> 8-bit``.
* :func:`age_photo` - clean image -> an "aged photo" look at the same resolution:
  ``blur -> sepia/yellowing -> fading -> vignette -> film grain -> JPEG``.

Both are data-driven: a config dataclass holds one small dataclass of parameter ranges per
effect (each with an ``enabled`` flag and a probability ``prob``) and an ``order`` tuple naming
the effects; a registry maps each name to the function that applies it. Adding an effect
(scratches, dust, ...) means writing one function, one config dataclass, and adding its name to
the registry and the ``order``.

Every effect draws from its own generator, spawned from the caller's one up front, so switching
one effect off (or changing its ranges) leaves the random choices of all the others unchanged.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np

Range = tuple[float, float]

#: OpenCV interpolation for each resampling method name used by :class:`DownscaleConfig`.
INTERPOLATIONS: dict[str, int] = {
    "area": cv2.INTER_AREA,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
}

# Rec. 601 luma weights (RGB order).
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# Effects: plain functions, image in -> image out, float32 in [0, 1], same shape unless noted.
# --------------------------------------------------------------------------------------------


def uniform(rng: np.random.Generator, bounds: Range) -> float:
    """A float drawn uniformly from ``bounds`` (lo, hi); ``lo`` itself when the range is empty."""
    lo, hi = float(bounds[0]), float(bounds[1])
    return lo if hi <= lo else float(rng.uniform(lo, hi))


def to_float32(img: np.ndarray) -> np.ndarray:
    """``img`` as a C-contiguous float32 array (no copy when it already is one)."""
    return np.ascontiguousarray(img, dtype=np.float32)


def luminance(img: np.ndarray) -> np.ndarray:
    """HxW luma of an HxWx3 RGB image (a gray HxW image is returned as is)."""
    if img.ndim == 2:
        return to_float32(img)
    return to_float32(img @ _LUMA)


def gaussian_blur(img: np.ndarray, rng: np.random.Generator, sigma: Range = (0.2, 1.5)) -> np.ndarray:
    """Isotropic Gaussian blur with a random sigma (pixels) drawn from ``sigma``."""
    s = uniform(rng, sigma)
    if s <= 0.0:
        return to_float32(img)
    return to_float32(cv2.GaussianBlur(to_float32(img), (0, 0), sigmaX=s, sigmaY=s, borderType=cv2.BORDER_REFLECT_101))


def downscale(
    img: np.ndarray,
    scale: int,
    rng: np.random.Generator,
    methods: tuple[str, ...] = ("area", "bilinear", "bicubic"),
) -> np.ndarray:
    """Resize to ``1/scale`` of the size (floor) with a resampling method picked from ``methods``."""
    if scale == 1:
        return to_float32(img)
    method = methods[int(rng.integers(len(methods)))] if len(methods) > 1 else methods[0]
    h, w = img.shape[:2]
    out = cv2.resize(to_float32(img), (w // scale, h // scale), interpolation=INTERPOLATIONS[method])
    return np.clip(out, 0.0, 1.0)


def gaussian_noise(
    img: np.ndarray,
    rng: np.random.Generator,
    sigma: Range = (1.0 / 255, 20.0 / 255),
    gray_prob: float = 0.4,
) -> np.ndarray:
    """Additive white Gaussian noise with a random sigma (in [0, 1] units).

    With probability ``gray_prob`` the same noise is added to every channel ("gray" noise, like
    sensor luminance noise); otherwise each channel gets its own ("colour" noise).
    """
    s = uniform(rng, sigma)
    gray = img.ndim == 2 or rng.random() < gray_prob
    if gray:
        shape = img.shape[:2] + ((1,) if img.ndim == 3 else ())
    else:
        shape = img.shape
    noise = rng.standard_normal(shape, dtype=np.float32) * np.float32(s)
    return np.clip(to_float32(img) + noise, 0.0, 1.0)


def film_grain(
    img: np.ndarray,
    rng: np.random.Generator,
    strength: Range = (0.02, 0.08),
    size: Range = (0.5, 1.2),
) -> np.ndarray:
    """Monochrome film grain: spatially correlated noise, strongest in the mid-tones.

    ``strength`` is the grain's standard deviation at mid-gray (units of [0, 1]); ``size`` is
    the sigma (pixels) of the blur that gives the grain its clump size. Shadows and highlights
    get about a third of the mid-tone grain, as on real film.
    """
    s = uniform(rng, strength)
    k = uniform(rng, size)
    h, w = img.shape[:2]
    grain = rng.standard_normal((h, w), dtype=np.float32)
    if k > 0.25:
        grain = cv2.GaussianBlur(grain, (0, 0), sigmaX=k, sigmaY=k, borderType=cv2.BORDER_REFLECT_101)
        grain /= np.float32(grain.std() + 1e-8)
    lum = luminance(img)
    amp = np.float32(s) * (0.35 + 2.6 * lum * (1.0 - lum))
    delta = amp * grain
    if img.ndim == 3:
        delta = delta[:, :, None]
    return np.clip(to_float32(img) + delta, 0.0, 1.0)


def to_uint8(img: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 (rounded, clipped)."""
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def quantize_8bit(img: np.ndarray) -> np.ndarray:
    """Round to the 256 levels of an 8-bit file (what every real input has been through)."""
    return to_uint8(img).astype(np.float32) / np.float32(255.0)


def jpeg_compress(img: np.ndarray, rng: np.random.Generator, quality: Range = (35, 95)) -> np.ndarray:
    """Encode and decode as an 8-bit JPEG at a random integer quality in ``quality`` (inclusive).

    Uses OpenCV's encoder defaults (4:2:0 chroma subsampling for colour), like most cameras and
    web pipelines.
    """
    q = int(rng.integers(int(quality[0]), int(quality[1]) + 1))
    arr = to_uint8(img)
    if arr.ndim == 3:
        arr = np.ascontiguousarray(arr[:, :, ::-1])  # RGB -> BGR for OpenCV
    ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, q])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 array
        raise RuntimeError("JPEG encoding failed")
    dec = cv2.imdecode(buf, cv2.IMREAD_COLOR if arr.ndim == 3 else cv2.IMREAD_GRAYSCALE)
    if dec.ndim == 3:
        dec = dec[:, :, ::-1]
    return dec.astype(np.float32) / np.float32(255.0)


def sepia(img: np.ndarray, rng: np.random.Generator, amount: Range = (0.35, 0.75),
          tone: tuple[float, float, float] = (1.10, 0.93, 0.70)) -> np.ndarray:
    """Blend towards a brown/yellow monochrome print: ``(1 - a) * img + a * luma * tone``."""
    a = np.float32(uniform(rng, amount))
    lum = luminance(img)
    if img.ndim == 2:
        return to_float32(img)
    toned = lum[:, :, None] * np.asarray(tone, dtype=np.float32)
    return np.clip((1.0 - a) * to_float32(img) + a * toned, 0.0, 1.0)


def fade(img: np.ndarray, rng: np.random.Generator, black_lift: Range = (0.06, 0.16),
         white_drop: Range = (0.03, 0.10),
         paper: tuple[float, float, float] = (1.0, 0.93, 0.78)) -> np.ndarray:
    """Fading: lifted, paper-tinted blacks and dimmer whites (contrast loss)."""
    lo = np.float32(uniform(rng, black_lift))
    hi = np.float32(1.0 - uniform(rng, white_drop))
    if img.ndim == 2:
        return to_float32(lo + (hi - lo) * img)
    black = lo * np.asarray(paper, dtype=np.float32)
    white = hi * np.asarray((1.0, 0.98, 0.92), dtype=np.float32)
    return np.clip(black + (white - black) * to_float32(img), 0.0, 1.0)


def vignette(img: np.ndarray, rng: np.random.Generator, strength: Range = (0.10, 0.30)) -> np.ndarray:
    """Darken towards the corners: gain ``1 - strength * r**2`` with r = 1 at the corners."""
    s = np.float32(uniform(rng, strength))
    h, w = img.shape[:2]
    yy = (np.arange(h, dtype=np.float32) - (h - 1) / 2) / max((h - 1) / 2, 1.0)
    xx = (np.arange(w, dtype=np.float32) - (w - 1) / 2) / max((w - 1) / 2, 1.0)
    gain = 1.0 - s * (yy[:, None] ** 2 + xx[None, :] ** 2) / 2.0
    if img.ndim == 3:
        gain = gain[:, :, None]
    return np.clip(to_float32(img) * gain, 0.0, 1.0)


# --------------------------------------------------------------------------------------------
# Parameter ranges, one dataclass per effect. ``prob``: chance the effect is applied to a given
# image; ``enabled=False`` switches it off entirely.
# --------------------------------------------------------------------------------------------


@dataclass
class BlurConfig:
    """Gaussian blur; ``sigma`` in pixels of the image it is applied to (HR for degrade_pair)."""

    enabled: bool = True
    prob: float = 0.7
    sigma: Range = (0.2, 1.5)


@dataclass
class DownscaleConfig:
    """Resampling HR -> LR. The resize always happens (the LR must be HR/scale): switched off,
    it uses INTER_AREA every time instead of a random pick from ``methods``."""

    enabled: bool = True
    prob: float = 1.0
    methods: tuple[str, ...] = ("area", "bilinear", "bicubic")


@dataclass
class NoiseConfig:
    """Additive Gaussian noise; ``sigma`` in [0, 1] units (20/255 is strong)."""

    enabled: bool = True
    prob: float = 0.6
    sigma: Range = (1.0 / 255, 20.0 / 255)
    gray_prob: float = 0.4


@dataclass
class GrainConfig:
    """Film grain; ``strength`` = mid-tone std in [0, 1] units, ``size`` = clump sigma (px)."""

    enabled: bool = True
    prob: float = 0.4
    strength: Range = (0.02, 0.08)
    size: Range = (0.5, 1.2)


@dataclass
class JpegConfig:
    """JPEG round trip at a random integer ``quality`` (inclusive range)."""

    enabled: bool = True
    prob: float = 0.7
    quality: Range = (35, 95)


@dataclass
class SepiaConfig:
    """Yellowing / sepia toning; ``amount`` = blend weight of the toned monochrome."""

    enabled: bool = True
    prob: float = 1.0
    amount: Range = (0.35, 0.75)
    tone: tuple[float, float, float] = (1.10, 0.93, 0.70)


@dataclass
class FadeConfig:
    """Fading / contrast loss: black level raised to ``black_lift`` (paper-tinted), white level
    lowered by ``white_drop``."""

    enabled: bool = True
    prob: float = 1.0
    black_lift: Range = (0.06, 0.16)
    white_drop: Range = (0.03, 0.10)


@dataclass
class VignetteConfig:
    """Corner darkening; ``strength`` = relative darkening at the corners."""

    enabled: bool = True
    prob: float = 0.8
    strength: Range = (0.10, 0.30)


class _PipelineConfig:
    """Shared helpers of the pipeline configs (``order`` + one effect config per name)."""

    order: tuple[str, ...]

    def effects(self) -> list[tuple[str, Any]]:
        """``(name, config)`` for each effect, in pipeline order."""
        return [(name, getattr(self, name)) for name in self.order]

    def without(self, *names: str):
        """A copy with the named effects switched off."""
        unknown = set(names) - set(self.order)
        if unknown:
            raise ValueError(f"unknown effect(s) {sorted(unknown)}; known: {list(self.order)}")
        changes = {n: dataclasses.replace(getattr(self, n), enabled=False) for n in names}
        return dataclasses.replace(self, **changes)

    def only(self, *names: str):
        """A copy with every effect except the named ones switched off."""
        return self.without(*(n for n in self.order if n not in names))


@dataclass
class DegradationConfig(_PipelineConfig):
    """Ranges of the HR -> LR degradation used for training and evaluation (:func:`degrade_pair`).

    The defaults aim at scanned/old consumer photos: mild to moderate optical blur, random
    resampling, sensor noise up to sigma 20/255, film grain, and JPEG down to quality 35.
    """

    blur: BlurConfig = field(default_factory=BlurConfig)
    downscale: DownscaleConfig = field(default_factory=DownscaleConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    grain: GrainConfig = field(default_factory=GrainConfig)
    jpeg: JpegConfig = field(default_factory=JpegConfig)
    order: tuple[str, ...] = ("blur", "downscale", "noise", "grain", "jpeg")


@dataclass
class AgeConfig(_PipelineConfig):
    """Ranges of the "aged photo" look (:func:`age_photo`), at the input's resolution."""

    blur: BlurConfig = field(default_factory=lambda: BlurConfig(prob=1.0, sigma=(0.5, 1.1)))
    sepia: SepiaConfig = field(default_factory=SepiaConfig)
    fade: FadeConfig = field(default_factory=FadeConfig)
    vignette: VignetteConfig = field(default_factory=VignetteConfig)
    grain: GrainConfig = field(default_factory=lambda: GrainConfig(prob=1.0, strength=(0.03, 0.06), size=(0.6, 1.1)))
    jpeg: JpegConfig = field(default_factory=lambda: JpegConfig(prob=1.0, quality=(55, 80)))
    order: tuple[str, ...] = ("blur", "sepia", "fade", "vignette", "grain", "jpeg")


# --------------------------------------------------------------------------------------------
# Registry and runner
# --------------------------------------------------------------------------------------------

#: ``effect(img, rng, cfg, scale) -> img``; called only when the effect fires (enabled + prob).
Effect = Callable[[np.ndarray, np.random.Generator, Any, int], np.ndarray]

EFFECTS: dict[str, Effect] = {
    "blur": lambda img, rng, c, scale: gaussian_blur(img, rng, c.sigma),
    "downscale": lambda img, rng, c, scale: downscale(img, scale, rng, tuple(c.methods)),
    "noise": lambda img, rng, c, scale: gaussian_noise(img, rng, c.sigma, c.gray_prob),
    "grain": lambda img, rng, c, scale: film_grain(img, rng, c.strength, c.size),
    "jpeg": lambda img, rng, c, scale: jpeg_compress(img, rng, c.quality),
    "sepia": lambda img, rng, c, scale: sepia(img, rng, c.amount, c.tone),
    "fade": lambda img, rng, c, scale: fade(img, rng, c.black_lift, c.white_drop),
    "vignette": lambda img, rng, c, scale: vignette(img, rng, c.strength),
}

#: What a required effect does when it is switched off or does not fire (it must still run).
FALLBACKS: dict[str, Effect] = {
    "downscale": lambda img, rng, c, scale: downscale(img, scale, rng, ("area",)),
}


def run_pipeline(img: np.ndarray, rng: np.random.Generator, config: _PipelineConfig, scale: int = 1) -> np.ndarray:
    """Apply ``config``'s effects in order. One child generator per effect is drawn from ``rng``
    first, so the effects' random choices do not depend on which other effects are on."""
    seeds = rng.integers(0, 2**63 - 1, size=len(config.order))
    out = to_float32(img)
    for (name, cfg), seed in zip(config.effects(), seeds):
        child = np.random.default_rng(int(seed))
        fires = child.random() < cfg.prob  # always drawn: the stream is the same on or off
        if cfg.enabled and fires:
            out = EFFECTS[name](out, child, cfg, scale)
        elif name in FALLBACKS:
            out = FALLBACKS[name](out, child, cfg, scale)
    return out


def _check_image(img: np.ndarray, what: str) -> np.ndarray:
    img = np.asarray(img)
    if img.ndim not in (2, 3) or (img.ndim == 3 and img.shape[2] not in (1, 3)):
        raise ValueError(f"{what}: expected an HxW or HxWx3 image, got shape {img.shape}")
    if img.dtype == np.uint8:
        img = img.astype(np.float32) / np.float32(255.0)
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    return to_float32(img)


def check_pair(hr: np.ndarray, scale: int, what: str) -> tuple[np.ndarray, int]:
    """A valid HR image for a ``scale``-x pair (float32, H and W divisible by ``scale``) and the scale."""
    hr = _check_image(hr, what)
    scale = int(scale)
    if scale < 1:
        raise ValueError(f"scale must be >= 1, got {scale}")
    h, w = hr.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"HR size {h}x{w} is not divisible by the scale {scale}")
    return hr, scale


def degrade_pair(
    hr: np.ndarray, scale: int, rng: np.random.Generator, config: DegradationConfig | None = None
) -> np.ndarray:
    """Degraded low-resolution input for a clean high-resolution image.

    ``hr``: HxWx3 (or HxW) float in [0, 1] (uint8 is accepted), H and W divisible by ``scale``.
    Returns float32 in [0, 1] of size (H/scale, W/scale), on the 8-bit grid. Deterministic given
    ``rng``'s state.
    """
    hr, scale = check_pair(hr, scale, "degrade_pair")
    lr = run_pipeline(hr, rng, config or DegradationConfig(), scale)
    return quantize_8bit(lr)


def age_photo(img: np.ndarray, rng: np.random.Generator, config: AgeConfig | None = None) -> np.ndarray:
    """An "aged photo" version of ``img`` at the same resolution: slight blur, sepia/yellow
    cast, fading (contrast loss), vignette, film grain and JPEG. Float32 in [0, 1]."""
    img = _check_image(img, "age_photo")
    return quantize_8bit(run_pipeline(img, rng, config or AgeConfig(), 1))
