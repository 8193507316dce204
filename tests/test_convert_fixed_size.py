"""A model the ONNX exporter specialises to its traced size (a branch on the input's shape, like
SwinIR's attention mask for its ``img_size``) gets a fixed size, the bundle's tile, in its
contract, instead of a graph that refuses every other size during validation."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from torch import nn  # noqa: E402

from restorekit.build.convert import convert_model  # noqa: E402
from restorekit.convert.onnx import export_fp32, export_model, exported_input_hw  # noqa: E402
from restorekit.models.spec import ModelSpec  # noqa: E402
from restorekit.runtime.onnx import OnnxSession  # noqa: E402

SPEC = ModelSpec(name="shape-branch", architecture="ShapeBranch", task="restore", scale=1)


class ShapeBranch(nn.Module):
    """A buffer precomputed for one input size and recomputed for any other, as SwinIR does."""

    def __init__(self, size: int = 64):
        super().__init__()
        self.size = size
        self.conv = nn.Conv2d(3, 3, 3, padding=1)
        self.register_buffer("offset", torch.full((1, 1, size, size), 0.01))

    def forward(self, x):
        if x.shape[-2:] == (self.size, self.size):
            offset = self.offset
        else:
            offset = torch.full((1, 1, x.shape[-2], x.shape[-1]), 0.01)
        return self.conv(x) + offset


def test_a_specialised_export_is_exported_again_at_the_tile(tmp_path):
    torch.manual_seed(0)
    net = ShapeBranch().eval()
    plain = tmp_path / "plain.onnx"
    export_fp32(net, SPEC, plain, 32)
    assert exported_input_hw(plain) == (64, 64)  # what the exporter makes of it: the traced size, fixed
    path = tmp_path / "m.onnx"
    assert export_model(net, SPEC, path, 32) == 32
    assert exported_input_hw(path) == (32, 32)


def test_the_bundle_contract_carries_the_fixed_size_and_runs_at_it(tmp_path):
    torch.manual_seed(0)
    net = ShapeBranch().eval()
    conv = convert_model(net, SPEC, "onnx", tmp_path, tile=32)
    assert conv.input.shape == [1, 3, 32, 32] and conv.output.shape == [1, 3, 32, 32]
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    out = OnnxSession(conv.path, conv.input, conv.output).run(x)
    assert np.abs(out - ref).max() < 1e-5


def test_a_dynamic_export_stays_dynamic(tmp_path):
    net = nn.Conv2d(3, 3, 3, padding=1).eval()
    assert export_model(net, SPEC, tmp_path / "m.onnx", 32) is None
    assert exported_input_hw(tmp_path / "m.onnx") is None
