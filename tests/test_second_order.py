"""Second-order (Real-ESRGAN-style) degradation and the extra aging effects do what they say."""

from __future__ import annotations

import dataclasses
from functools import lru_cache

import cv2
import numpy as np
import pytest

from restorekit.degrade.aging import (
    AgingConfig,
    CyanDyeLossConfig,
    HalftoneConfig,
    SilverMirroringConfig,
    apply_aging,
    cyan_dye_loss,
    halftone,
    silver_mirroring,
)
from restorekit.degrade.synthetic import luminance
from restorekit.degrade.second_order import (
    KERNEL_KINDS,
    KernelConfig,
    SecondOrderConfig,
    apply_kernel,
    kernel,
    poisson_noise,
    random_kernel,
    second_order_pair,
    sinc_kernel,
)

from .conftest import SAMPLES


@lru_cache(maxsize=None)
def _load(name: str) -> np.ndarray:
    bgr = cv2.imread(str(SAMPLES / name), cv2.IMREAD_COLOR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).astype(np.float32) / np.float32(255.0)


def _photo(h: int = 128, w: int = 128, name: str = "astronaut.png") -> np.ndarray:
    """A real photo, RGB float32 in [0, 1], shrunk to h x w."""
    return cv2.resize(_load(name), (w, h), interpolation=cv2.INTER_AREA)


# ---------------------------------------------------------------------------------- kernels


@pytest.mark.parametrize("kind", KERNEL_KINDS)
def test_kernels_sum_to_one(kind):
    k = kernel(kind, 15, 2.0, 0.7, 0.4, 1.7)
    assert k.shape == (15, 15) and k.dtype == np.float32
    assert abs(float(k.sum()) - 1.0) < 1e-5


def test_random_kernels_and_sinc_are_normalised_odd_sized():
    rng = np.random.default_rng(0)
    cfg = KernelConfig(sinc_prob=0.3)
    for _ in range(60):
        k = random_kernel(rng, cfg)
        assert k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1 and 7 <= k.shape[0] <= 21
        assert abs(float(k.sum()) - 1.0) < 1e-5
    s = sinc_kernel(21, np.pi / 4)
    assert abs(float(s.sum()) - 1.0) < 1e-5 and s.min() < 0  # ringing lobes


@pytest.mark.parametrize("kind", ["iso", "generalized_iso", "plateau_iso"])
def test_isotropic_kernel_is_symmetric_under_rotation(kind):
    k = kernel(kind, 13, 2.0, 0.5, 0.7, 1.5)  # sigma_y and theta are ignored
    assert np.allclose(k, np.rot90(k), atol=1e-7)
    assert np.allclose(k, k.T, atol=1e-7)


@pytest.mark.parametrize("kind", ["aniso", "generalized_aniso", "plateau_aniso"])
def test_anisotropic_kernel_is_not(kind):
    k = kernel(kind, 13, 2.5, 0.8, 0.3, 1.5)
    assert np.abs(k - np.rot90(k)).max() > 0.1 * k.max()
    assert np.allclose(k, k[::-1, ::-1], atol=1e-7)  # still point-symmetric


def test_large_beta_kernels_are_flat_topped():
    profile = lambda k: k[10] / k[10].max()  # noqa: E731 - centre row, peak = 1
    gauss = profile(kernel("iso", 21, 3.0))
    gen = profile(kernel("generalized_iso", 21, 3.0, beta=4.0))
    plateau = profile(kernel("plateau_iso", 21, 3.0, beta=2.0))
    for flat in (gen, plateau):
        assert flat[12] > gauss[12] + 0.03  # 2 px from the centre: still near the peak
    assert gen[15] < 0.5 * gauss[15]  # and a sharper fall-off beyond sigma


def test_apply_kernel_blurs_and_keeps_the_mean():
    img = _photo(64, 64)
    out = apply_kernel(img, kernel("aniso", 11, 3.0, 1.0, 0.5))
    assert out.shape == img.shape and out.dtype == np.float32
    assert abs(out.mean() - img.mean()) < 0.01
    assert np.abs(np.diff(out, axis=1)).mean() < 0.8 * np.abs(np.diff(img, axis=1)).mean()


# ---------------------------------------------------------------------------------- pipeline


def test_second_order_is_deterministic_with_a_seed():
    hr = _photo()
    a, hr_a = second_order_pair(hr, np.random.default_rng(3), 4)
    b, _ = second_order_pair(hr, np.random.default_rng(3), 4)
    c, _ = second_order_pair(hr, np.random.default_rng(4), 4)
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    assert np.array_equal(hr_a, hr)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
def test_lr_is_exactly_hr_over_scale(scale):
    for seed in range(3):
        lr, hr = second_order_pair(_photo(96, 120), np.random.default_rng(seed), scale)
        assert lr.shape == (96 // scale, 120 // scale, 3) and hr.shape == (96, 120, 3)
        assert lr.dtype == np.float32 and 0.0 <= lr.min() and lr.max() <= 1.0
        assert np.allclose(lr * 255, np.rint(lr * 255), atol=1e-4)  # on the 8-bit grid


def test_hr_size_must_be_divisible_by_scale():
    with pytest.raises(ValueError, match="divisible"):
        second_order_pair(_photo(66, 64), np.random.default_rng(0), 4)


def test_switching_noise_off_leaves_the_other_draws_unchanged():
    """Noise that is on but adds exactly zero gives the same LR as noise switched off: every
    other effect (kernels, resize factors, JPEG qualities, final order) drew the same."""
    hr = _photo()
    base = SecondOrderConfig()
    zero = dataclasses.replace(base.first.noise, prob=1.0, gaussian_prob=1.0, sigma=(0.0, 0.0))
    silent = SecondOrderConfig(
        first=dataclasses.replace(base.first, noise=zero),
        second=dataclasses.replace(base.second, noise=zero),
    )
    for seed in range(4):
        off, _ = second_order_pair(hr, np.random.default_rng(seed), 2, base.without("noise"))
        on_zero, _ = second_order_pair(hr, np.random.default_rng(seed), 2, silent)
        on, _ = second_order_pair(hr, np.random.default_rng(seed), 2, base)
        assert np.array_equal(off, on_zero)
        assert not np.array_equal(off, on)


def test_without_rejects_unknown_effects():
    with pytest.raises(ValueError):
        SecondOrderConfig().without("first.grain")


def test_poisson_noise_variance_grows_with_intensity():
    rng = np.random.default_rng(0)
    var = {}
    for level in (0.2, 0.8):
        flat = np.full((96, 96, 3), level, np.float32)
        var[level] = float((poisson_noise(flat, rng, 1.0) - flat).var())
        assert abs(var[level] - level / 255.0) < 0.15 * level / 255.0  # variance = scale^2 x / 255
    assert 3.0 < var[0.8] / var[0.2] < 5.0
    gray = poisson_noise(np.full((32, 32, 3), 0.5, np.float32), rng, 2.0, gray=True)
    assert np.array_equal(gray[..., 0], gray[..., 2]) and gray.std() > 0.01


def _only_first_jpeg(quality: int) -> SecondOrderConfig:
    cfg = SecondOrderConfig().without("blur", "resize", "noise", "second.jpeg", "final.sinc")
    cfg.first.jpeg = dataclasses.replace(cfg.first.jpeg, quality=(quality, quality))
    return cfg


def test_jpeg_leaves_8x8_block_artefacts():
    yy, xx = np.mgrid[0:128, 0:128].astype(np.float32) / 127.0
    smooth = np.stack([0.2 + 0.6 * xx, 0.3 + 0.4 * yy, 0.5 + 0.3 * xx * yy], axis=2)
    lr, _ = second_order_pair(smooth, np.random.default_rng(0), 1, _only_first_jpeg(30))
    grad = np.abs(np.diff(luminance(lr), axis=1))  # grad[:, j] = step between columns j and j+1
    across = grad[:, 7::8].mean()  # steps across block boundaries (7|8, 15|16, ...)
    inside = np.delete(grad, np.s_[7::8], axis=1).mean()
    assert across > 2.0 * inside


# ---------------------------------------------------------------------------------- aging


def test_cyan_dye_loss_turns_the_print_red():
    img = _photo(64, 64)
    out = cyan_dye_loss(img, np.random.default_rng(0), CyanDyeLossConfig(amount=(0.4, 0.4)))
    eps = 1e-3
    assert np.mean(out[..., 0] / (out[..., 1] + eps)) > 1.2 * np.mean(img[..., 0] / (img[..., 1] + eps))
    assert (1 - out[..., 0]).mean() < (1 - img[..., 0]).mean() - 0.05  # less cyan
    assert np.array_equal(out[..., 1:], img[..., 1:])
    ramp = np.repeat(np.linspace(0, 1, 64, dtype=np.float32)[None, :, None], 3, axis=2)
    faded = cyan_dye_loss(ramp, np.random.default_rng(0), CyanDyeLossConfig(amount=(0.4, 0.4)))
    gain = faded[0, :, 0] - ramp[0, :, 0]
    assert gain[8:40].mean() > 3 * gain[56:].mean()  # shadows/mid-tones hit hardest


def _border_distance(h: int, w: int) -> np.ndarray:
    """Each pixel's distance (px) to the nearest image border."""
    rows, cols = np.arange(h), np.arange(w)
    return np.minimum.outer(np.minimum(rows, rows[::-1]), np.minimum(cols, cols[::-1]))


def test_silver_mirroring_hits_dark_edges_toward_blue_grey():
    img = _photo(128, 128)
    lum = luminance(img)
    d = _border_distance(128, 128)
    dark_edge, bright_centre = (lum < 0.25) & (d < 12), (lum > 0.6) & (d > 40)
    assert dark_edge.sum() > 50 and bright_centre.sum() > 50
    change = np.zeros_like(lum)
    for seed in range(4):
        out = silver_mirroring(img, np.random.default_rng(seed), SilverMirroringConfig())
        change += np.abs(out - img).sum(axis=2)
    assert change[dark_edge].mean() > 5 * change[bright_centre].mean()
    flat = np.full((64, 64, 3), 0.08, np.float32)
    out = silver_mirroring(flat, np.random.default_rng(1), SilverMirroringConfig(strength=(0.8, 0.8)))
    delta = (out - flat)[_border_distance(64, 64) < 6].mean(axis=0)  # outer band
    assert delta[2] > delta[1] > delta[0] > 0.02  # lighter and bluish


def _spectrum(img: np.ndarray) -> np.ndarray:
    lum = luminance(img)
    win = np.outer(np.hanning(lum.shape[0]), np.hanning(lum.shape[1]))
    return np.abs(np.fft.fftshift(np.fft.fft2((lum - lum.mean()) * win)))


def test_halftone_has_a_spectral_peak_at_the_screen_frequency():
    n, period, angle = 128, 6.0, 30.0
    img = _photo(n, n, "coffee.png")
    cfg = HalftoneConfig(period=(period, period), angle=(angle, angle))
    out = halftone(img, np.random.default_rng(0), cfg)
    f_in, f_out = _spectrum(img), _spectrum(out)
    t = np.deg2rad(angle)
    k1, k2 = np.array([np.sin(t), np.cos(t)]), np.array([np.cos(t), -np.sin(t)])  # (row, col) freqs
    peaks = [n / 2 + sign * k * n / period for k in (k1, k2) for sign in (1, -1)]  # +-k1, +-k2 bins
    for r, c in peaks:
        box = np.s_[int(round(r)) - 1:int(round(r)) + 2, int(round(c)) - 1:int(round(c)) + 2]
        assert f_out[box].max() > 8 * f_in[box].max()
    yy, xx = np.mgrid[0:n, 0:n] - n / 2
    f_out[np.hypot(yy, xx) < 8] = 0  # ignore the image's own low frequencies
    r, c = np.unravel_index(np.argmax(f_out), f_out.shape)
    assert min(np.hypot(r - pr, c - pc) for pr, pc in peaks) < 1.5  # the strongest peak is the screen


def test_aging_is_deterministic_and_effects_are_independent():
    img = _photo(64, 64)
    cfg = AgingConfig(
        cyan_dye_loss=CyanDyeLossConfig(prob=1.0),
        silver_mirroring=SilverMirroringConfig(prob=1.0),
        halftone=HalftoneConfig(prob=1.0),
    )
    a = apply_aging(img, np.random.default_rng(5), cfg)
    assert np.array_equal(a, apply_aging(img, np.random.default_rng(5), cfg))
    assert not np.array_equal(a, apply_aging(img, np.random.default_rng(6), cfg))
    # silver mirroring off: the same halftone screen is drawn as with it on (cyan unchanged too)
    no_silver = dataclasses.replace(cfg, silver_mirroring=SilverMirroringConfig(enabled=False))
    only_cyan_halftone = apply_aging(img, np.random.default_rng(5), no_silver)
    seeds = np.random.default_rng(5).integers(0, 2**63 - 1, size=3)
    children = [np.random.default_rng(int(s)) for s in seeds]
    for ch in children:
        ch.random()  # the prob draw
    manual = halftone(cyan_dye_loss(img, children[0], cfg.cyan_dye_loss), children[2], cfg.halftone)
    assert np.array_equal(only_cyan_halftone, manual)
