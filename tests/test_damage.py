"""Old-photo damage with masks, and the `restorekit degrade` preview."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.degrade.damage import DamageConfig, damage_photo
from restorekit.core.image import read_image


def _always(**off) -> DamageConfig:
    cfg = DamageConfig()
    for name in cfg.order:
        setattr(cfg, name, dataclasses.replace(getattr(cfg, name), prob=1.0, enabled=name not in off))
    return cfg


@pytest.fixture
def photo(rgb_photo):
    return np.ascontiguousarray(rgb_photo[::2, ::2])  # 256x256


def test_deterministic_with_the_seed(photo):
    a = damage_photo(photo, np.random.default_rng(5), _always())
    b = damage_photo(photo, np.random.default_rng(5), _always())
    c = damage_photo(photo, np.random.default_rng(6), _always())
    assert np.array_equal(a.image, b.image) and np.array_equal(a.defects, b.defects)
    assert not np.array_equal(a.image, c.image)


def test_masks_mark_the_pixels_that_changed(photo):
    d = damage_photo(photo, np.random.default_rng(1), _always(stains=True))  # stains off: tone only
    changed = np.abs(d.image - photo).max(axis=2) > 2 / 255
    assert 0.002 < d.defects.mean() < 0.2
    # nearly every defect pixel changed, and nearly every changed pixel is in the (dilated) mask
    assert changed[d.defects].mean() > 0.9
    import cv2

    grown = cv2.dilate(d.defects.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    assert grown[changed].mean() > 0.95
    assert set(d.masks) == {"scratches", "hairs", "dust", "torn_corner"}
    assert d.image.dtype == np.float32 and 0 <= d.image.min() and d.image.max() <= 1


def test_switching_one_effect_off_keeps_the_others_identical(photo):
    full = damage_photo(photo, np.random.default_rng(2), _always())
    no_dust = damage_photo(photo, np.random.default_rng(2), _always(dust=True))
    assert "dust" not in no_dust.masks
    for name in ("scratches", "hairs", "torn_corner", "stains"):
        assert np.array_equal(full.masks[name], no_dust.masks[name]), name


def test_gray_input_stays_gray(photo):
    d = damage_photo(photo.mean(axis=2), np.random.default_rng(0), _always())
    assert d.image.ndim == 2 and d.defects.shape == photo.shape[:2]


def test_degrade_cli_writes_image_and_mask(tmp_path, rgb_photo):
    from restorekit.core.image import write_image

    src = tmp_path / "in.png"
    write_image(src, rgb_photo[:200, :240])
    out, mask = tmp_path / "out.png", tmp_path / "mask.png"
    runner = CliRunner()
    res = runner.invoke(app, ["degrade", str(src), "-o", str(out), "--mask", str(mask), "--seed", "4"])
    assert res.exit_code == 0, res.output
    img, m = read_image(out), read_image(mask)
    assert img.size == (200, 240) and m.size == (200, 240) and m.was_gray
    again = tmp_path / "again.png"
    assert runner.invoke(app, ["degrade", str(src), "-o", str(again), "--seed", "4"]).exit_code == 0
    assert np.array_equal(read_image(again).rgb, img.rgb)  # same seed, same picture
    pair = tmp_path / "lr.png"
    assert runner.invoke(app, ["degrade", str(src), "-o", str(pair), "--mode", "pair", "--scale", "2"]).exit_code == 0
    assert read_image(pair).size == (100, 120)
    lr = tmp_path / "lr4.png"
    assert runner.invoke(app, ["degrade", str(src), "-o", str(lr), "--mode", "second-order", "--scale", "4"]).exit_code == 0
    assert read_image(lr).size == (50, 60)
    aged = tmp_path / "print.png"
    for seed in range(6):  # each print effect fires with its training probability: some seed changes the photo
        assert runner.invoke(app, ["degrade", str(src), "-o", str(aged), "--mode", "print", "--seed", str(seed)]).exit_code == 0
        if np.abs(read_image(aged).rgb - read_image(src).rgb).mean() > 0.01:
            break
    else:
        raise AssertionError("--mode print changed nothing in 6 seeds")


@pytest.mark.parametrize("args, message", [
    (["--mode", "aged", "--mask", "{tmp}/m.png"], "--mask needs --mode damaged"),
    (["--mode", "sketch"], "unknown --mode"),
    (["-o", "{tmp}/missing/dir/out.png"], "output directory does not exist"),
])
def test_degrade_bad_usage(tmp_path, rgb_photo, args, message):
    from restorekit.core.image import write_image

    src = tmp_path / "in.png"
    write_image(src, rgb_photo[:64, :64])
    argv = ["degrade", str(src)] + [a.format(tmp=tmp_path) for a in args]
    if "-o" not in argv:
        argv += ["-o", str(tmp_path / "o.png")]
    res = CliRunner().invoke(app, argv)
    assert res.exit_code == 2 and message in res.output
    assert not (tmp_path / "o.png").exists()
