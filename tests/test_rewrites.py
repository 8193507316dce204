"""Edge rewrites are exact in fp32 and reach the bundle: PReLU -> relu(x) - a*relu(-x) for TFLite."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from restorekit.convert.rewrites import ReluFormPReLU, apply_rewrites, max_difference, prelu_to_relu_form  # noqa: E402
from tests.conftest import REALESR, need_shared  # noqa: E402


@pytest.mark.parametrize("channels", [1, 8])  # a shared slope and one per channel
def test_prelu_rewrite_is_bit_exact(channels):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(channels), nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        net[1].weight.uniform_(-0.5, 0.9)  # negative slopes too
    new, done = prelu_to_relu_form(net)
    assert done == ["1"] and isinstance(new[1], ReluFormPReLU) and isinstance(net[1], nn.PReLU)  # a copy
    assert max_difference(net, new, torch.randn(2, 3, 17, 19) * 3) == 0.0


def test_rewrite_on_real_esrgan_compact_and_in_the_tflite_bundle(tmp_path):
    from restorekit.convert import convert_model
    from restorekit.models.loader import load_model

    loaded = load_model(need_shared(REALESR))
    new, applied = apply_rewrites(loaded.module, ("prelu",))
    assert applied == {"prelu": 17}  # one PReLU after the first conv and after each of the 16 body convs
    assert not any(isinstance(m, nn.PReLU) for m in new.modules())
    assert max_difference(loaded.module, new, torch.rand(1, 3, 32, 32)) == 0.0
    conv = convert_model(loaded.module, loaded.spec, "tflite", tmp_path, "fp32", tile=32)
    assert conv.recipe["rewrites"] == {"prelu": 17}
    from ai_edge_litert.interpreter import Interpreter

    ops = {op["op_name"] for op in Interpreter(model_path=str(conv.path))._get_ops_details()}
    assert "PRELU" not in ops and "SELECT" not in ops and "SELECT_V2" not in ops and "RELU" in ops, ops
