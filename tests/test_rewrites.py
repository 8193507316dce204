"""Edge rewrites are exact in fp32 and reach the bundle: PReLU -> max(x, a*x) for TFLite and ONNX (slopes
above 1 by sign flips folded into the convs around it; relu(x) - a*relu(-x) where they cannot be)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from restorekit.convert.rewrites import (  # noqa: E402
    MaxFormPReLU, ReluFormPReLU, apply_rewrites, max_difference, prelu_to_max_form, prelu_to_relu_form,
    prelu_to_split_relu)
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


def _chain(slopes: torch.Tensor) -> nn.Sequential:
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(slopes.numel()), nn.Conv2d(8, 3, 3, padding=1))
    with torch.no_grad():
        net[1].weight.copy_(slopes)
    return net


@pytest.mark.parametrize("slopes", [
    torch.tensor([-0.5, 0.0, 0.25, 1.0, 0.9, -1.2, 0.1, 0.5]),  # all <= 1: max(x, a*x) as it is
    torch.tensor([1.7, 0.2, 2.5, -0.3, 1.01, 0.0, 0.8, 3.0]),  # four above 1: their channels flipped
])
def test_max_form_is_bit_exact_with_slopes_above_one_folded_into_the_convs(slopes):
    net = _chain(slopes)
    new, done = prelu_to_max_form(net)
    assert done == ["1"] and isinstance(new[1], MaxFormPReLU) and isinstance(net[1], nn.PReLU)  # a copy
    above = int((slopes > 1).sum())
    assert new[1].flipped == above
    # the flipped channels are negated in the conv before (weights, bias) and read negated after
    flip = slopes > 1
    assert torch.equal(new[0].weight[flip], -net[0].weight[flip]) and torch.equal(new[0].bias[flip], -net[0].bias[flip])
    assert torch.equal(new[2].weight[:, flip], -net[2].weight[:, flip])
    assert torch.equal(new[0].weight[~flip], net[0].weight[~flip])
    assert max_difference(net, new, torch.randn(2, 3, 17, 19) * 3) == 0.0


def test_max_form_without_convs_around_a_slope_above_one_falls_back_to_the_relu_form():
    x = torch.randn(2, 4, 9, 9) * 3
    lone = nn.Sequential(nn.PReLU(4))  # no conv to fold a sign into
    with torch.no_grad():
        lone[0].weight.copy_(torch.tensor([0.2, 1.5, -0.1, 0.7]))
    new, _ = prelu_to_max_form(lone)
    assert isinstance(new[0], ReluFormPReLU) and max_difference(lone, new, x) == 0.0
    with torch.no_grad():
        lone[0].weight.copy_(torch.tensor([0.2, 0.5, -0.1, 0.7]))  # all <= 1: no folding needed
    new, _ = prelu_to_max_form(lone)
    assert isinstance(new[0], MaxFormPReLU) and new[0].flipped == 0 and max_difference(lone, new, x) == 0.0
    shared = _chain(torch.tensor([1.3]))  # one shared slope above 1 cannot be flipped per channel
    new, _ = prelu_to_max_form(shared)
    assert isinstance(new[1], ReluFormPReLU) and max_difference(shared, new, torch.randn(1, 3, 8, 8)) == 0.0


def test_int8_tflite_of_the_max_form_is_integer_end_to_end(tmp_path):
    """Every op between the input quantize and the output dequantize runs on int8 tensors: the
    PReLU is MUL + MAXIMUM in int8, not a float island (what made int8 slower than fp32)."""
    from ai_edge_litert.interpreter import Interpreter

    from restorekit.build.convert import convert_model
    from restorekit.models.spec import ModelSpec

    net = _chain(torch.tensor([1.7, 0.2, 2.5, -0.3, 1.01, 0.0, 0.8, 3.0]))
    spec = ModelSpec(name="chain", architecture="Sequential", task="restore", scale=1)
    rng = np.random.default_rng(0)
    calib = [rng.random((1, 3, 16, 16), dtype=np.float32) for _ in range(4)]
    conv = convert_model(net, spec, "tflite", tmp_path, "w8a8", tile=16, calib=calib)
    assert conv.recipe["rewrites"] == {"prelu": 1}
    interp = Interpreter(model_path=str(conv.path))
    tensors = {t["index"]: t for t in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    names = [op["op_name"] for op in ops]
    assert "MAXIMUM" in names and "MUL" in names and not {"RELU", "NEG", "SUB", "PRELU"} & set(names), names
    for op in ops:
        if op["op_name"] in ("QUANTIZE", "DEQUANTIZE"):
            continue
        assert tensors[op["outputs"][0]]["dtype"] == np.int8, (op["op_name"], tensors[op["outputs"][0]]["dtype"])


def test_rewrite_on_real_esrgan_compact_and_in_the_tflite_bundle(tmp_path):
    from restorekit.build.convert import convert_model
    from restorekit.models.loader import load_model

    loaded = load_model(need_shared(REALESR))
    new, applied = apply_rewrites(loaded.module, ("prelu",))
    assert applied == {"prelu": 17}  # one PReLU after the first conv and after each of the 16 body convs
    assert not any(isinstance(m, nn.PReLU) for m in new.modules())
    assert max_difference(loaded.module, new, torch.rand(1, 3, 32, 32)) == 0.0
    conv = convert_model(loaded.module, loaded.spec, "tflite", tmp_path, "fp32", tile=32)
    assert conv.recipe["rewrites"] == {"prelu": 17, "compact_base": 1, "pixel_shuffle": 1}
    assert max_difference(loaded.module, apply_rewrites(loaded.module, ("prelu", "compact_base", "pixel_shuffle"))[0],
                          torch.rand(1, 3, 24, 40)) == 0.0
    from ai_edge_litert.interpreter import Interpreter

    ops = {op["op_name"] for op in Interpreter(model_path=str(conv.path))._get_ops_details()}
    assert "MAXIMUM" in ops and not {"PRELU", "SELECT", "SELECT_V2", "RELU", "NEG"} & ops, ops
    assert conv.input.shape[1:3] == [None, None]  # Compact's graph resizes: no reshape baked at the traced size


class _FunctionalRelu(nn.Module):
    """conv -> torch.relu -> conv: the activation is a function, not a module."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(3, 4, 3, padding=1), nn.Conv2d(4, 3, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def test_max_form_leaves_a_functional_relu_net_alone():
    net = _FunctionalRelu()
    new, done = prelu_to_max_form(net)
    assert done == [] and max_difference(net, new, torch.randn(1, 3, 8, 8)) == 0.0


def _deep_chain(slopes: list[float] | None = None, depth: int = 5, width: int = 6) -> nn.Sequential:
    """conv -> PReLU -> conv ... -> conv: ``depth - 1`` PReLUs between ``depth`` convs."""
    torch.manual_seed(2)
    layers = [nn.Conv2d(3, width, 3, padding=1)]
    for i in range(depth - 1):
        layers += [nn.PReLU(width if slopes is None else 1), nn.Conv2d(width, 3 if i == depth - 2 else width, 3, padding=1)]
    net = nn.Sequential(*layers)
    with torch.no_grad():
        for k, m in enumerate(m for m in net if isinstance(m, nn.PReLU)):
            if slopes is None:
                m.weight.uniform_(-1.5, 2.5)  # negative, between 0 and 1, above 1: all exact
            else:
                m.weight.fill_(slopes[k])
    return net


@pytest.mark.parametrize("slopes", [None, [0.25, -0.6, 1.8, 0.0]])  # per channel; one shared slope each
def test_split_prelu_is_exact_and_splits_every_other_chain(slopes):
    net = _deep_chain(slopes)
    new, done = prelu_to_split_relu(net)
    assert done == ["1", "5"]  # the 1st and 3rd chains: the 2nd and 4th share a conv with a split one
    assert [type(m).__name__ for m in new] == ["Conv2d", "ReLU", "Conv2d", "PReLU", "Conv2d", "ReLU", "Conv2d",
                                               "PReLU", "Conv2d"]
    assert isinstance(net[1], nn.PReLU) and net[0].out_channels == 6  # the caller's model is a copy
    # the conv before a split computes x and -x; the conv after reads both halves
    assert (new[0].out_channels, new[2].in_channels, new[2].out_channels) == (12, 12, 6)
    assert (new[4].out_channels, new[6].in_channels, new[8].in_channels) == (12, 12, 6)
    assert torch.equal(new[0].weight[6:], -net[0].weight) and torch.equal(new[0].bias[6:], -net[0].bias)
    assert max_difference(net, new, torch.randn(2, 3, 13, 11) * 3) < 1e-5


def test_split_then_max_form_on_real_esrgan_compact():
    from restorekit.convert import edge_model
    from restorekit.models.loader import load_model

    loaded = load_model(need_shared(REALESR))
    new, applied = edge_model(loaded.module, "onnx", split_prelus=True)
    assert applied == {"split_prelu": 9, "prelu": 8}  # PReLUs 1, 3, ..., 17 split; the 8 between stay PReLU
    widths = [m.out_channels for m in new.modules() if isinstance(m, nn.Conv2d)]
    assert widths == [128, 64] * 8 + [128, 48]  # every conv is doubled once at most: its output or its input
    assert max_difference(loaded.module, new, torch.rand(1, 3, 32, 32)) < 1e-4
    assert edge_model(loaded.module, "onnx")[1] == {"prelu": 17}  # only int8 asks for the split
    # not a tflite rewrite
    assert edge_model(loaded.module, "tflite", split_prelus=True)[1] == {"prelu": 17, "compact_base": 1,
                                                                         "pixel_shuffle": 1}


def test_split_prelu_leaves_a_functional_relu_net_alone():
    net = _FunctionalRelu()
    new, done = prelu_to_split_relu(net)
    assert done == [] and new.a.out_channels == 4 and max_difference(net, new, torch.randn(1, 3, 8, 8)) == 0.0


def test_nafnet_layernorm2d_becomes_plain_ops_and_converts_to_core_ml(tmp_path):
    """NAFNet's LayerNorm2d is an autograd Function (a PythonOp Core ML cannot convert): the Core
    ML target's rewrite computes the same values in plain ops, and the program converts."""
    pytest.importorskip("coremltools")
    from restorekit.build.convert import convert_model
    from restorekit.convert.rewrites import layernorm2d_to_plain_ops, max_difference
    from restorekit.models.arches import ARCHES

    arch = ARCHES["NAFNet"]
    model = arch.build(small=True)
    rewritten, done = layernorm2d_to_plain_ops(model)
    assert len(done) == 10 and max_difference(model, rewritten, torch.rand(1, 3, 32, 32)) < 1e-5
    conv = convert_model(model, arch.spec(small=True), "coreml", tmp_path, "fp32", tile=32)
    assert conv.recipe["rewrites"] == {"layernorm2d": 10} and conv.path.exists()


def _shuffle_nets():
    from restorekit.models.edgenet import EdgeRestoreNet
    from restorekit.models.unet import ScratchUNet

    torch.manual_seed(0)
    sr = EdgeRestoreNet(channels=8, num_convs=1, scale=3)
    nn.init.normal_(sr.tail.weight, std=0.1)  # the tail starts at zero: give the shuffle something to move
    return [sr.eval(), ScratchUNet(width=4).eval()]


@pytest.mark.parametrize("index", [0, 1])
def test_pixel_shuffle_as_transposed_conv_is_bit_exact(index):
    from restorekit.convert.rewrites import TransposedConvPixelShuffle, pixel_shuffle_to_transposed_conv

    net = _shuffle_nets()[index]
    new, done = pixel_shuffle_to_transposed_conv(net)
    assert len(done) == (1, 2)[index] and new is not net
    assert sum(isinstance(m, TransposedConvPixelShuffle) for m in new.modules()) == len(done)
    assert not any(type(m) is nn.PixelShuffle for m in new.modules())
    assert any(type(m) is nn.PixelShuffle for m in net.modules())  # the caller's model is untouched
    for shape in ((1, 3, 32, 32), (2, 3, 20, 28)):
        assert max_difference(net, new, torch.rand(*shape)) == 0.0


def test_tflite_bundle_graph_resizes_and_keeps_its_shuffle_in_float(tmp_path):
    """The TFLite export of a pixel-shuffle net has dynamic height and width: one file runs tiles of
    any size (fp32 equal to PyTorch at two sizes); in full-integer int8 the shuffle stays float."""
    from ai_edge_litert.interpreter import Interpreter

    from restorekit.build.convert import convert_model
    from restorekit.convert.rewrites import pixel_shuffle_to_transposed_conv
    from restorekit.models.spec import ModelSpec
    from restorekit.runtime.tflite import TFLiteSession

    net = _shuffle_nets()[0]
    spec = ModelSpec(name="shuffle", architecture="EdgeRestoreNet", task="sr", scale=3)
    for sub in ("fp32", "int8"):
        (tmp_path / sub).mkdir()
    conv = convert_model(net, spec, "tflite", tmp_path / "fp32", "fp32", tile=32)
    assert conv.input.shape == [1, None, None, 3] and conv.output.shape == [1, None, None, 3]
    session = TFLiteSession(conv.path, conv.input, conv.output)
    assert session.fixed_size is None
    for h, w in ((32, 32), (40, 56), (32, 32)):
        x = torch.rand(1, 3, h, w)
        y = session.run(x.numpy())
        assert y.shape == (1, 3, 3 * h, 3 * w)
        assert np.abs(y - net(x).detach().numpy()).max() < 1e-5
    calib = [np.random.default_rng(i).random((1, 3, 32, 32), dtype=np.float32) for i in range(4)]
    q = convert_model(net, spec, "tflite", tmp_path / "int8", "int8", tile=32, calib=calib)
    interp = Interpreter(model_path=str(q.path))
    dtypes = {d["index"]: d["dtype"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()
    shuffles = [op for op in ops if op["op_name"] == "TRANSPOSE_CONV"]
    assert len(shuffles) == 1 and dtypes[shuffles[0]["outputs"][0]] == np.float32
    assert any(op["op_name"] == "CONV_2D" and dtypes[op["outputs"][0]] == np.int8 for op in ops)
    # the clamp after the shuffle gives the int8 sum before it the clamp's own range, [0, 1]
    quant = {d["index"]: d["quantization"] for d in interp.get_tensor_details()}
    (add,) = [op for op in ops if op["op_name"] == "ADD"]
    assert abs(quant[add["outputs"][0]][0] - 1 / 255) < 1e-6
    assert pixel_shuffle_to_transposed_conv(net)[1] == ["shuffle"]
