"""Real-ESRGAN-style second-order degradation: clean HR photo -> realistic LR input.

The idea follows Wang et al., "Real-ESRGAN: Training Real-World Blind Super-Resolution with Pure
Synthetic Data" (ICCVW 2021): the classic ``blur -> resize -> noise -> JPEG`` model is applied
*twice*, then the image is resized to the LR size, with an optional 2-D sinc filter for ringing
and overshoot artefacts. This module is an independent numpy/OpenCV implementation in the style
of :mod:`restorekit.degrade.synthetic` (float32 images in [0, 1], all randomness from an
``np.random.Generator``, one child generator per effect so that switching one effect off leaves
the random choices of all the others unchanged).

Pipeline of :func:`second_order_pair` (``s`` = scale, HR of size H x W)::

    round 1: blur (kernel 1) -> random resize (factor of the current size) -> noise -> JPEG
    round 2: blur (kernel 2) -> random resize (factor of the LR size H/s x W/s) -> noise
    final:   [resize to H/s x W/s -> sinc]  and  JPEG (round 2's), in random order (p 0.5 each)
    -> 8-bit

Default ranges (:class:`SecondOrderConfig`) are those of the paper (Sec. 4.1 / training details)
and of its official training options (``train_realesrgan_x4plus.yml``: probabilities, kernel mix):

=====================  ================================  ================================
effect                 round 1                           round 2
=====================  ================================  ================================
blur probability       1.0                               0.8
kernel size            odd, 7..21                        odd, 7..21
kernel mix             iso .45, aniso .25, generalized iso .12 / aniso .03,
                       plateau iso .12 / aniso .03; sinc instead with p 0.1
blur sigma (px)        0.2 - 3                           0.2 - 1.5
rotation               -pi .. pi                         -pi .. pi
beta generalized       0.5 - 4                           0.5 - 4
beta plateau           1 - 2                             1 - 2
resize up/down/keep    0.2 / 0.7 / 0.1                   0.3 / 0.4 / 0.3
resize factor          0.15 - 1.5                        0.3 - 1.2 (of the LR size)
resize method          area / bilinear / bicubic         area / bilinear / bicubic
Gaussian noise         p 0.5, sigma 1 - 30 (8-bit)       p 0.5, sigma 1 - 25 (8-bit)
Poisson noise          otherwise, scale 0.05 - 3         otherwise, scale 0.05 - 2.5
gray noise             p 0.4                             p 0.4
JPEG quality           30 - 95                           30 - 95 (in the final stage)
final sinc             p 0.8, size 7..21, cutoff pi/3 - pi
=====================  ================================  ================================
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import cv2
import numpy as np

from restorekit.degrade.synthetic import (INTERPOLATIONS, JpegConfig, check_pair, gaussian_noise, jpeg_compress,
                                          to_float32, uniform)
from restorekit.degrade.synthetic import luminance, quantize_8bit

Range = tuple[float, float]

KERNEL_KINDS = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


# --------------------------------------------------------------------------------------------
# Kernels
# --------------------------------------------------------------------------------------------


def _bessel_j1(x: np.ndarray, n: int = 256) -> np.ndarray:
    """Bessel J1 from its integral form (trapezoid over a full period: exponentially accurate)."""
    tau = np.arange(n) * (2 * np.pi / n)
    return np.cos(np.multiply.outer(x, np.sin(tau)) - tau).mean(axis=-1)


def _grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    if size < 1 or size % 2 == 0:
        raise ValueError(f"kernel size must be odd and positive, got {size}")
    ax = np.arange(size, dtype=np.float64) - size // 2
    return np.meshgrid(ax, ax)  # (x = column, y = row)


def kernel(kind: str, size: int, sigma_x: float = 1.0, sigma_y: float | None = None,
           theta: float = 0.0, beta: float = 1.0) -> np.ndarray:
    """One ``size`` x ``size`` blur kernel, normalised to sum 1 (float32).

    ``kind``: ``iso``/``aniso`` Gaussian ``exp(-q/2)``, ``generalized_*`` ``exp(-q**beta/2)``,
    ``plateau_*`` ``1/(1 + q**beta)``, where ``q = x^T S^-1 x`` with S the covariance of std
    ``sigma_x``/``sigma_y`` rotated by ``theta`` (radians). ``*_iso`` ignores sigma_y and theta.
    """
    family, _, shape = kind.rpartition("_") if "_" in kind else ("gaussian", "", kind)
    if shape not in ("iso", "aniso") or family not in ("gaussian", "generalized", "plateau"):
        raise ValueError(f"unknown kernel kind {kind!r}; known: {KERNEL_KINDS}")
    if shape == "iso":
        sigma_y, theta = sigma_x, 0.0
    elif sigma_y is None:
        sigma_y = sigma_x
    xx, yy = _grid(size)
    c, s = np.cos(theta), np.sin(theta)
    q = ((c * xx + s * yy) / sigma_x) ** 2 + ((-s * xx + c * yy) / sigma_y) ** 2
    if family == "gaussian":
        k = np.exp(-0.5 * q)
    elif family == "generalized":
        k = np.exp(-0.5 * q**beta)
    else:
        k = 1.0 / (1.0 + q**beta)
    return (k / k.sum()).astype(np.float32)


def sinc_kernel(size: int, omega: float) -> np.ndarray:
    """Circular 2-D sinc (ideal low-pass, cutoff ``omega`` rad/px) of odd ``size``, sum 1."""
    xx, yy = _grid(size)
    r = np.hypot(xx, yy)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = omega * _bessel_j1(omega * r) / (2 * np.pi * r)
    k[size // 2, size // 2] = omega**2 / (4 * np.pi)
    return (k / k.sum()).astype(np.float32)


def _odd_size(rng: np.random.Generator, bounds: tuple[int, int]) -> int:
    sizes = np.arange(int(bounds[0]) | 1, int(bounds[1]) + 1, 2)
    return int(sizes[rng.integers(len(sizes))])


def _sinc_omega(rng: np.random.Generator, size: int, omega: Range | None) -> float:
    # Real-ESRGAN: small kernels get only the stronger cutoffs (a wide sinc needs room)
    return uniform(rng, omega or ((np.pi / 3, np.pi) if size < 13 else (np.pi / 5, np.pi)))


def random_kernel(rng: np.random.Generator, cfg: "KernelConfig") -> np.ndarray:
    """A random blur kernel drawn from ``cfg``'s ranges (odd size, sum 1, float32)."""
    size = _odd_size(rng, cfg.size)
    if rng.random() < cfg.sinc_prob:
        return sinc_kernel(size, _sinc_omega(rng, size, None))
    p = np.asarray(cfg.kind_probs, np.float64)
    kind = cfg.kinds[int(rng.choice(len(cfg.kinds), p=p / p.sum()))]
    sx = uniform(rng, cfg.sigma)
    sy, theta = (uniform(rng, cfg.sigma), uniform(rng, cfg.rotation)) if kind.endswith("aniso") else (sx, 0.0)
    beta = 1.0
    if not kind.startswith(("iso", "aniso")):  # half the time below 1 (peaky), half above (flat)
        lo, hi = cfg.beta_generalized if kind.startswith("generalized") else cfg.beta_plateau
        beta = uniform(rng, (lo, 1.0)) if rng.random() < 0.5 else uniform(rng, (1.0, hi))
    return kernel(kind, size, sx, sy, theta, beta)


def apply_kernel(img: np.ndarray, k: np.ndarray) -> np.ndarray:
    """2-D convolution of each channel with ``k`` (reflect-101 borders); not clipped."""
    k = np.ascontiguousarray(np.asarray(k, np.float32)[::-1, ::-1])
    return to_float32(cv2.filter2D(to_float32(img), -1, k, borderType=cv2.BORDER_REFLECT_101))


# --------------------------------------------------------------------------------------------
# Resize and noise
# --------------------------------------------------------------------------------------------


def random_resize(img: np.ndarray, rng: np.random.Generator, cfg: "ResizeConfig",
                  ref: tuple[int, int] | None = None) -> np.ndarray:
    """Resize to ``factor`` x ``ref`` (h, w; default: the image's own size): up, down or keep
    with ``cfg.updown_probs``, a uniform factor in [1, max] / [min, 1], a random method."""
    p = np.asarray(cfg.updown_probs, np.float64)
    updown = int(rng.choice(3, p=p / p.sum()))
    f = (uniform(rng, (1.0, cfg.factor[1])), uniform(rng, (cfg.factor[0], 1.0)), 1.0)[updown]
    method = cfg.methods[int(rng.integers(len(cfg.methods)))]
    h, w = ref or img.shape[:2]
    size = (max(1, int(w * f)), max(1, int(h * f)))
    return np.clip(cv2.resize(to_float32(img), size, interpolation=INTERPOLATIONS[method]), 0.0, 1.0)


def poisson_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool = False,
                  peak: float = 255.0) -> np.ndarray:
    """Signal-dependent shot noise: ``x + scale * (Poisson(peak * x) / peak - x)``, clipped.

    The added noise has variance ``scale**2 * x / peak`` (``peak`` = photon count at white). With
    ``gray`` one noise field is drawn from the luma and added to every channel.
    """
    base = luminance(img) if gray else to_float32(img)
    lam = np.maximum(base.astype(np.float64), 0.0) * peak
    noise = ((rng.poisson(lam) / peak - base) * scale).astype(np.float32)
    if gray and img.ndim == 3:
        noise = noise[:, :, None]
    return np.clip(to_float32(img) + noise, 0.0, 1.0)


def mixed_noise(img: np.ndarray, rng: np.random.Generator, cfg: "MixedNoiseConfig") -> np.ndarray:
    """Gaussian noise (p ``gaussian_prob``, sigma in 8-bit units) or else Poisson noise; gray
    (the same in every channel) with p ``gray_prob``."""
    if rng.random() < cfg.gaussian_prob:
        return gaussian_noise(img, rng, (cfg.sigma[0] / 255.0, cfg.sigma[1] / 255.0), cfg.gray_prob)
    s = uniform(rng, cfg.poisson_scale)
    return poisson_noise(img, rng, s, gray=img.ndim == 2 or rng.random() < cfg.gray_prob)


# --------------------------------------------------------------------------------------------
# Configs
# --------------------------------------------------------------------------------------------


@dataclass
class KernelConfig:
    """Blur kernel mix. ``size``: odd sizes in this inclusive range; ``sigma`` in px;
    ``rotation`` in radians (anisotropic kinds); ``sinc_prob``: a sinc kernel instead."""

    enabled: bool = True
    prob: float = 1.0
    kinds: tuple[str, ...] = KERNEL_KINDS
    kind_probs: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    size: tuple[int, int] = (7, 21)
    sigma: Range = (0.2, 3.0)
    rotation: Range = (-np.pi, np.pi)
    beta_generalized: Range = (0.5, 4.0)
    beta_plateau: Range = (1.0, 2.0)
    sinc_prob: float = 0.1


@dataclass
class ResizeConfig:
    """Random resize: ``updown_probs`` = (up, down, keep); ``factor`` = (min, max) scale."""

    enabled: bool = True
    prob: float = 1.0
    updown_probs: tuple[float, float, float] = (0.2, 0.7, 0.1)
    factor: Range = (0.15, 1.5)
    methods: tuple[str, ...] = ("area", "bilinear", "bicubic")


@dataclass
class MixedNoiseConfig:
    """Gaussian (``sigma`` in 8-bit units) with p ``gaussian_prob``, else Poisson (``poisson_scale``)."""

    enabled: bool = True
    prob: float = 1.0
    gaussian_prob: float = 0.5
    sigma: Range = (1.0, 30.0)
    poisson_scale: Range = (0.05, 3.0)
    gray_prob: float = 0.4


@dataclass
class SincConfig:
    """Final 2-D sinc filter (ringing/overshoot); ``omega`` = cutoff range in rad/px."""

    enabled: bool = True
    prob: float = 0.8
    size: tuple[int, int] = (7, 21)
    omega: Range = (np.pi / 3, np.pi)


@dataclass
class RoundConfig:
    """One ``blur -> resize -> noise -> JPEG`` round (defaults: Real-ESRGAN round 1)."""

    blur: KernelConfig = field(default_factory=KernelConfig)
    resize: ResizeConfig = field(default_factory=ResizeConfig)
    noise: MixedNoiseConfig = field(default_factory=MixedNoiseConfig)
    jpeg: JpegConfig = field(default_factory=lambda: JpegConfig(prob=1.0, quality=(30, 95)))


def _second_round() -> RoundConfig:
    return RoundConfig(
        blur=KernelConfig(prob=0.8, sigma=(0.2, 1.5)),
        resize=ResizeConfig(updown_probs=(0.3, 0.4, 0.3), factor=(0.3, 1.2)),
        noise=MixedNoiseConfig(sigma=(1.0, 25.0), poisson_scale=(0.05, 2.5)),
        jpeg=JpegConfig(prob=1.0, quality=(30, 95)),
    )


@dataclass
class FinalConfig:
    """Final stage: resize to the LR size (random ``methods``), sinc, and round 2's JPEG,
    which comes first with p ``jpeg_first_prob``."""

    sinc: SincConfig = field(default_factory=SincConfig)
    methods: tuple[str, ...] = ("area", "bilinear", "bicubic")
    jpeg_first_prob: float = 0.5


@dataclass
class SecondOrderConfig:
    """Ranges of :func:`second_order_pair`: two rounds and the final stage (module docstring)."""

    first: RoundConfig = field(default_factory=RoundConfig)
    second: RoundConfig = field(default_factory=_second_round)
    final: FinalConfig = field(default_factory=FinalConfig)

    def without(self, *names: str) -> "SecondOrderConfig":
        """A copy with effects off: ``"first.noise"``, ``"final.sinc"``, or ``"noise"`` (both rounds)."""
        out = copy.deepcopy(self)
        for name in names:
            where, _, eff = name.rpartition(".")
            for part in [where] if where else ["first", "second"]:
                parent = getattr(out, part, None)
                if parent is None or not hasattr(getattr(parent, eff, None), "enabled"):
                    raise ValueError(f"unknown effect {name!r}")
                setattr(parent, eff, dataclasses.replace(getattr(parent, eff), enabled=False))
        return out


# --------------------------------------------------------------------------------------------
# Pipeline
# --------------------------------------------------------------------------------------------

#: One child generator per slot, always drawn in this order (whatever is switched on).
SLOTS = ("first.blur", "first.resize", "first.noise", "first.jpeg", "second.blur", "second.resize",
         "second.noise", "second.jpeg", "final.sinc", "final.resize", "final.order")


def _round(img, rc: RoundConfig, fire: dict, rngs: dict, tag: str, ref=None, jpeg=True) -> np.ndarray:
    if fire[f"{tag}.blur"]:
        img = np.clip(apply_kernel(img, random_kernel(rngs[f"{tag}.blur"], rc.blur)), 0.0, 1.0)
    if fire[f"{tag}.resize"]:
        img = random_resize(img, rngs[f"{tag}.resize"], rc.resize, ref)
    if fire[f"{tag}.noise"]:
        img = mixed_noise(img, rngs[f"{tag}.noise"], rc.noise)
    if jpeg and fire[f"{tag}.jpeg"]:
        img = jpeg_compress(img, rngs[f"{tag}.jpeg"], rc.jpeg.quality)
    return img


def second_order_pair(hr: np.ndarray, rng: np.random.Generator, scale: int,
                      config: SecondOrderConfig | None = None) -> tuple[np.ndarray, np.ndarray]:
    """``(lr, hr)``: a second-order degraded LR of exactly (H/scale, W/scale) on the 8-bit grid,
    and the clean HR as float32. ``hr``: HxWx3 or HxW, float in [0, 1] or uint8, H and W
    divisible by ``scale``. Deterministic given ``rng``'s state."""
    hr, scale = check_pair(hr, scale, "second_order_pair")
    h, w = hr.shape[:2]
    cfg = config or SecondOrderConfig()
    seeds = rng.integers(0, 2**63 - 1, size=len(SLOTS))
    rngs = {name: np.random.default_rng(int(s)) for name, s in zip(SLOTS, seeds)}
    fire = {}
    for name in SLOTS[:-2]:  # the effects that can be off; the draw is made either way
        part, eff = name.split(".")
        c = getattr(getattr(cfg, part), eff)
        fire[name] = bool(rngs[name].random() < c.prob) and c.enabled
    lr_hw = (h // scale, w // scale)

    out = _round(hr, cfg.first, fire, rngs, "first")
    out = _round(out, cfg.second, fire, rngs, "second", ref=lr_hw, jpeg=False)

    def resize_sinc(img):
        """The final resize to the LR size, then (when it fires) the sinc filter."""
        m = cfg.final.methods[int(rngs["final.resize"].integers(len(cfg.final.methods)))]
        img = np.clip(cv2.resize(to_float32(img), lr_hw[::-1], interpolation=INTERPOLATIONS[m]), 0.0, 1.0)
        if fire["final.sinc"]:
            r, sc = rngs["final.sinc"], cfg.final.sinc
            size = _odd_size(r, sc.size)
            img = np.clip(apply_kernel(img, sinc_kernel(size, _sinc_omega(r, size, sc.omega))), 0.0, 1.0)
        return img

    def jpeg(img):
        """The second round's JPEG compression, when it fires."""
        return jpeg_compress(img, rngs["second.jpeg"], cfg.second.jpeg.quality) if fire["second.jpeg"] else img

    if rngs["final.order"].random() < cfg.final.jpeg_first_prob:
        out = resize_sinc(jpeg(out))
    else:
        out = jpeg(resize_sinc(out))
    return quantize_8bit(out), hr
