"""The shipped built-in model: loads, has the right shape contract, and beats bicubic."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from restorekit.degrade.synthetic import degrade_pair  # noqa: E402
from restorekit.models.builtin import (  # noqa: E402
    BUILTIN_WEIGHTS,
    load_builtin,
    read_safetensors_metadata,
)
from restorekit.core.metrics import psnr  # noqa: E402
from restorekit.core.image import read_image  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
HELD_OUT_SAMPLE = ROOT / "sample_images" / "chelsea.png"  # never trained on (scripts/train_builtin.py)


@pytest.fixture(scope="module")
def model():
    torch.set_num_threads(min(2, torch.get_num_threads()))
    return load_builtin()


def test_weights_are_shipped_small_and_described():
    assert BUILTIN_WEIGHTS.is_file()
    assert BUILTIN_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    meta = read_safetensors_metadata(BUILTIN_WEIGHTS)
    assert meta["architecture"] == "EdgeRestoreNet" and meta["task"] == "restore" and meta["scale"] == "2"


def test_param_count_in_range(model):
    n = sum(p.numel() for p in model.parameters())
    assert 50_000 <= n <= 300_000
    assert not model.training


def test_shape_and_range(model):
    x = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        y = model(x)
    assert y.shape == (1, 3, 64, 64)
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
    assert torch.isfinite(y).all()


def test_beats_bicubic_on_a_held_out_image(model):
    hr_full = read_image(HELD_OUT_SAMPLE).rgb
    rng = np.random.default_rng(1234)
    gains = []
    for _ in range(4):
        y = int(rng.integers(hr_full.shape[0] - 128 + 1))
        x = int(rng.integers(hr_full.shape[1] - 128 + 1))
        hr = np.ascontiguousarray(hr_full[y : y + 128, x : x + 128])
        lr = degrade_pair(hr, 2, rng)
        bic = np.clip(cv2.resize(lr, (128, 128), interpolation=cv2.INTER_CUBIC), 0, 1)
        with torch.no_grad():
            out = model(torch.from_numpy(lr.transpose(2, 0, 1).copy())[None])[0].numpy().transpose(1, 2, 0)
        gains.append(psnr(out, hr) - psnr(bic, hr))
    assert np.mean(gains) >= 0.5, f"gain over bicubic {np.mean(gains):+.2f} dB per crop {np.round(gains, 2)}"
