"""Synthetic degradations: deterministic, right shapes, and each effect does what it says."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.degrade.synthetic import (
    AgeConfig,
    DegradationConfig,
    age_photo,
    degrade_pair,
    film_grain,
    gaussian_noise,
    jpeg_compress,
)


def _photo(h: int = 64, w: int = 96, seed: int = 0) -> np.ndarray:
    """A smooth, textured synthetic RGB image in [0, 1]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 0.5 + 0.3 * np.sin(xx / 7.0)[..., None] * np.cos(yy / 5.0)[..., None] * np.array([1.0, 0.8, 0.6])
    return np.clip(base + 0.05 * rng.random((h, w, 3)), 0, 1).astype(np.float32)


def test_degrade_pair_is_deterministic_with_a_seed():
    hr = _photo()
    a = degrade_pair(hr, 2, np.random.default_rng(7))
    b = degrade_pair(hr, 2, np.random.default_rng(7))
    c = degrade_pair(hr, 2, np.random.default_rng(8))
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("scale", [1, 2, 4])
def test_lr_shape_is_hr_over_scale(scale):
    lr = degrade_pair(_photo(64, 96), scale, np.random.default_rng(0))
    assert lr.shape == (64 // scale, 96 // scale, 3)
    assert lr.dtype == np.float32 and lr.min() >= 0.0 and lr.max() <= 1.0
    assert np.allclose(lr * 255, np.rint(lr * 255), atol=1e-4)  # on the 8-bit grid


def test_hr_size_must_be_divisible_by_scale():
    with pytest.raises(ValueError, match="divisible"):
        degrade_pair(_photo(63, 96), 2, np.random.default_rng(0))


@pytest.mark.parametrize("gray_prob", [0.0, 1.0])
def test_noise_raises_the_std_of_a_flat_image(gray_prob):
    flat = np.full((64, 64, 3), 0.5, np.float32)
    noisy = gaussian_noise(flat, np.random.default_rng(0), sigma=(0.05, 0.05), gray_prob=gray_prob)
    assert abs(noisy.std() - 0.05) < 0.005
    channels_equal = np.allclose(noisy[..., 0], noisy[..., 1])
    assert channels_equal == (gray_prob == 1.0)  # gray noise: same in every channel


def test_film_grain_raises_std_most_in_midtones():
    rng = np.random.default_rng(0)
    mid = film_grain(np.full((64, 64, 3), 0.5, np.float32), rng, strength=(0.05, 0.05))
    dark = film_grain(np.full((64, 64, 3), 0.03, np.float32), rng, strength=(0.05, 0.05))
    assert mid.std() > 0.03
    assert dark.std() < mid.std() / 1.5


def _blockiness(img: np.ndarray) -> tuple[float, float]:
    """Mean |horizontal step| across 8x8 block boundaries vs inside blocks."""
    d = np.abs(np.diff(img.mean(axis=2), axis=1))  # d[:, j] = |x[j+1] - x[j]|
    cols = np.arange(d.shape[1])
    boundary = (cols % 8) == 7
    return float(d[:, boundary].mean()), float(d[:, ~boundary].mean())


def test_jpeg_on_a_smooth_gradient_makes_8x8_blocks():
    h, w = 64, 128
    ramp = np.linspace(0.1, 0.9, w, dtype=np.float32)
    img = np.repeat(np.stack([ramp, ramp * 0.9, ramp * 0.8], axis=1)[None], h, axis=0)
    img += 0.15 * np.sin(np.linspace(0, 3, h, dtype=np.float32))[:, None, None]
    out = jpeg_compress(np.clip(img, 0, 1), np.random.default_rng(0), quality=(10, 10))
    at_edges, inside = _blockiness(out)
    assert at_edges > 1.5 * inside


def test_age_photo_yellows_a_gray_image():
    gray = np.full((64, 64, 3), 0.5, np.float32)
    aged = age_photo(gray, np.random.default_rng(0))
    assert aged.shape == gray.shape
    r, g, b = aged.reshape(-1, 3).mean(axis=0)
    assert r > b + 0.05 and g > b
    assert np.array_equal(aged, age_photo(gray, np.random.default_rng(0)))


def test_age_photo_with_everything_off_is_the_input():
    img = _photo()
    cfg = AgeConfig().only()
    assert np.allclose(age_photo(img, np.random.default_rng(0), cfg), np.rint(img * 255) / 255, atol=1e-6)


def test_disabling_an_effect_leaves_it_out():
    flat = np.full((64, 64, 3), 0.5, np.float32)
    cfg = DegradationConfig()
    always = cfg.__class__(
        noise=type(cfg.noise)(prob=1.0, sigma=(0.05, 0.05)),
        grain=type(cfg.grain)(enabled=False),
        jpeg=type(cfg.jpeg)(enabled=False),
    )
    assert degrade_pair(flat, 2, np.random.default_rng(0), always).std() > 0.03
    assert degrade_pair(flat, 2, np.random.default_rng(0), always.without("noise")).std() == 0.0


def test_switching_one_effect_off_keeps_the_others_random_choices():
    """Each effect has its own random stream. Blur does nothing to a flat image, so with or
    without it the noise and grain drawn afterwards must be bit-identical."""
    flat = np.full((64, 64, 3), 0.4, np.float32)
    cfg = DegradationConfig(
        blur=type(DegradationConfig().blur)(prob=1.0),
        noise=type(DegradationConfig().noise)(prob=1.0),
        grain=type(DegradationConfig().grain)(prob=1.0),
    ).without("jpeg")
    with_blur = degrade_pair(flat, 2, np.random.default_rng(3), cfg)
    without_blur = degrade_pair(flat, 2, np.random.default_rng(3), cfg.without("blur"))
    assert with_blur.std() > 0.01
    assert np.array_equal(with_blur, without_blur)


def test_only_downscale_is_a_plain_resize():
    import cv2

    hr = _photo()
    cfg = DegradationConfig().only("downscale")
    cfg = cfg.__class__(**{**cfg.__dict__, "downscale": type(cfg.downscale)(methods=("area",))})
    lr = degrade_pair(hr, 2, np.random.default_rng(0), cfg)
    expected = cv2.resize(hr, (48, 32), interpolation=cv2.INTER_AREA)
    assert np.abs(lr - expected).max() <= 0.5 / 255 + 1e-6


def test_unknown_effect_name_is_an_error():
    with pytest.raises(ValueError, match="unknown effect"):
        DegradationConfig().without("scratches")
