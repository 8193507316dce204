"""`restorekit inspect`: per-target findings read from the traced graph's ops."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from typer.testing import CliRunner  # noqa: E402

from restorekit.cli.main import app  # noqa: E402
from restorekit.convert.compat import BLOCK, HANDLED, OK, WARN, compatibility  # noqa: E402
from restorekit.models.spec import ModelSpec  # noqa: E402
from tests.conftest import REALESR, need_shared  # noqa: E402


class FourierBlock(nn.Module):  # LaMa-style spectral convolution
    def forward(self, x):
        f = torch.fft.rfft2(x)
        return torch.fft.irfft2(f * 0.5, s=x.shape[-2:])


class NoisyBlock(nn.Module):  # StyleGAN2-style noise injection
    def forward(self, x):
        return x + 0.1 * torch.randn_like(x)


class _Scale(torch.autograd.Function):  # a custom autograd Function (NAFNet's LayerNorm2d pattern)
    @staticmethod
    def forward(ctx, x):
        return x * 2

    @staticmethod
    def backward(ctx, g):
        return g * 2


class CustomFunction(nn.Module):
    def forward(self, x):
        return _Scale.apply(x)


def _levels(module) -> dict[str, str]:
    spec = ModelSpec(name="t", architecture="t", task="restore", scale=1)
    return {r.target: r.level for r in compatibility(module, spec)}


def test_fft_blocks_tflite_and_coreml_and_warns_for_tensorrt():
    assert _levels(FourierBlock()) == {"onnx": WARN, "tflite": BLOCK, "coreml": BLOCK}


def test_noise_injection_blocks_every_target():
    assert set(_levels(NoisyBlock()).values()) == {BLOCK}


def test_custom_autograd_function_blocks_coreml():
    levels = _levels(CustomFunction())
    assert levels["coreml"] == BLOCK and levels["tflite"] == BLOCK and levels["onnx"] == WARN


def test_plain_convs_are_fine_everywhere():
    assert set(_levels(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))).values()) == {OK}


def test_inspect_real_esrgan_compact():
    res = CliRunner().invoke(app, ["inspect", str(need_shared(REALESR)), "--size", "256x256"])
    assert res.exit_code == 0, res.output
    out = res.output
    assert "RealESRGAN Compact" in out and "621,424" in out and "\n│ scale              │ 4" in out
    assert "MACs at 256x256" in out and "40.58 G" in out  # 619.2 GMAC per megapixel x 0.0655 MP
    assert "PReLU: rewritten to max(x, a*x)" in out and "DepthToSpace" in out
    spec_levels = {r.target: r.level for r in compatibility(*_loaded(REALESR))}
    assert spec_levels == {"onnx": HANDLED, "tflite": HANDLED, "coreml": OK}


def _loaded(path):
    from restorekit.models.loader import load_model

    m = load_model(path)
    return m.module, m.spec
