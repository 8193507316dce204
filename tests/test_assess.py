"""Damage assessment: print type, fading, cast, noise, blockiness, on real and synthetic inputs."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.degrade import synthetic as degrade
from restorekit.restore.assess import assess
from restorekit.core.image import list_images, read_image
from tests.conftest import SAMPLES, SHARED, need_shared


def test_every_historical_bw_photo_is_bw():
    folder = need_shared(SHARED / "photos" / "bw")
    tones = {p.name: assess(read_image(p).rgb).tone for p in list_images(folder)}
    assert len(tones) >= 8 and set(tones.values()) == {"bw"}, tones


def test_colour_gray_and_sepia(rgb_photo):
    assert assess(rgb_photo).tone == "colour"
    gray = read_image(SAMPLES / "camera.png").rgb
    assert assess(gray).tone == "bw"
    toned = degrade.sepia(gray, np.random.default_rng(0), amount=(0.6, 0.6))
    assert assess(toned).tone == "sepia"


def test_fading_lowers_tonal_range_and_contrast(rgb_photo):
    faded = degrade.fade(rgb_photo, np.random.default_rng(0), black_lift=(0.2, 0.2), white_drop=(0.15, 0.15))
    a, b = assess(rgb_photo), assess(faded)
    assert b.tonal_range < a.tonal_range - 20 and b.contrast < a.contrast


def test_noise_estimate_tracks_added_noise():
    smooth = cv2.GaussianBlur(read_image(SAMPLES / "coffee.png").rgb, (0, 0), 3)
    base = assess(smooth).noise_sigma
    noisy = np.clip(smooth + np.random.default_rng(0).normal(0, 10 / 255, smooth.shape), 0, 1).astype(np.float32)
    assert base < 2 and assess(noisy).noise_sigma == pytest.approx(10, abs=2)


def test_jpeg_blockiness(rgb_photo):
    ok, buf = cv2.imencode(".jpg", (rgb_photo[:, :, ::-1] * 255).astype(np.uint8), [cv2.IMWRITE_JPEG_QUALITY, 15])
    blocky = cv2.imdecode(buf, cv2.IMREAD_COLOR)[:, :, ::-1].astype(np.float32) / 255
    assert assess(blocky).blockiness > 1.3 > assess(rgb_photo).blockiness


def test_colour_cast_is_measured(rgb_photo):
    cast = np.clip(rgb_photo * np.array([1.0, 0.95, 0.75], np.float32), 0, 1)  # yellow cast
    a, b = assess(rgb_photo), assess(cast)
    assert b.cast_b > a.cast_b + 8


def test_assess_cli_json_and_bad_input(tmp_path):
    out = tmp_path / "a.json"
    res = CliRunner().invoke(app, ["assess", str(SAMPLES / "camera.png"), str(SAMPLES / "coffee.png"), "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert [r["tone"] for r in data["images"]] == ["bw", "colour"]
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    res = CliRunner().invoke(app, ["assess", str(bad)])
    assert res.exit_code == 2 and "cannot decode image" in res.output
