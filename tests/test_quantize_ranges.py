"""Activation ranges of the integer schemes: true min-max calibration and the output clamp's grid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from restorekit.build.convert import convert_model
from restorekit.models.spec import ModelSpec

SPEC_X2 = ModelSpec(name="clamped", architecture="ClampedX2", task="restore", scale=2)
SPEC_X1 = ModelSpec(name="plain", architecture="Plain", task="restore", scale=1)


class ClampedX2(nn.Module):
    """clamp(pixel_shuffle(conv(relu(conv(x)))) + nearest_x2(x), 0, 1): the built-in model's output end."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.tail = nn.Conv2d(8, 12, 3, padding=1)

    def forward(self, x):
        up = F.interpolate(x, scale_factor=2, mode="nearest")
        return torch.clamp(F.pixel_shuffle(self.tail(torch.relu(self.head(x))), 2) + up, 0.0, 1.0)


class MidClamp(nn.Module):
    """A ReLU6-style clamp inside the network: not the output's, so its range stays calibrated."""

    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 3, 3, padding=1)

    def forward(self, x):
        return self.b(torch.clamp(self.a(x), 0.0, 6.0))


def _clamped(seed=0) -> ClampedX2:
    torch.manual_seed(seed)
    net = ClampedX2().eval()
    with torch.no_grad():  # a residual big enough to push the sum outside [0, 1] before the clamp
        net.tail.weight.mul_(4.0)
    return net


def _tiles(n: int, seed: int = 0, scale: float = 1.0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(rng.random((1, 3, 16, 16)) * scale).astype(np.float32) for _ in range(n)]


def test_onnx_output_clamp_ranges_cover_the_clamp_and_what_feeds_it(tmp_path):
    import onnx

    from restorekit.convert.onnx import export_fp32
    from restorekit.quantize.onnx import output_clamp_ranges

    export_fp32(_clamped(), SPEC_X2, tmp_path / "c.onnx", 16)
    graph = onnx.load(str(tmp_path / "c.onnx")).graph
    ranges = output_clamp_ranges(onnx.load(str(tmp_path / "c.onnx")))
    clip = next(n for n in graph.node if n.op_type == "Clip")
    add = next(n for n in graph.node if n.op_type == "Add")
    assert ranges[add.output[0]] == (0.0, 1.0)  # the pre-clamp sum
    assert ranges[clip.output[0]] == (0.0, 1.0)
    conv_outputs = {n.output[0] for n in graph.node if n.op_type == "Conv"}
    assert not conv_outputs & set(ranges)  # the Add reads two tensors: the walk stops there

    export_fp32(MidClamp().eval(), SPEC_X1, tmp_path / "m.onnx", 16)
    assert output_clamp_ranges(onnx.load(str(tmp_path / "m.onnx"))) == {}


def test_onnx_w8a8_quantizes_the_output_clamp_input_on_the_8bit_grid(tmp_path):
    """Calibration saw the sum before the clamp (wider than [0, 1]); its Q step must be 1/255."""
    import onnx
    from onnx import numpy_helper

    net = _clamped()
    calib = _tiles(6)
    with torch.no_grad():
        pre = [float((F.pixel_shuffle(net.tail(torch.relu(net.head(torch.from_numpy(t)))), 2)
                      + F.interpolate(torch.from_numpy(t), scale_factor=2)).max()) for t in calib]
    assert max(pre) > 1.2  # the case this is about
    conv = convert_model(net, SPEC_X2, "onnx", tmp_path, "w8a8", tile=16, calib=calib)
    graph = onnx.load(str(conv.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    add = next(n for n in graph.node if n.op_type == "Add")
    q = next(n for n in graph.node if n.op_type == "QuantizeLinear" and n.input[0] == add.output[0])
    assert float(inits[q.input[1]]) == pytest.approx(1 / 255, rel=1e-6)
    assert int(inits[q.input[2]]) == 0


def test_tflite_calibration_is_true_min_max_not_a_moving_average(tmp_path):
    """Five dark tiles then one bright one: a moving average (ai-edge-quantizer's default) ends near
    the dark tiles' range and clips the bright tile; min-max keeps it."""
    from restorekit.build.convert import open_converted
    from restorekit.core.metrics import psnr

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1)).eval()
    with torch.no_grad():
        net[2].weight.zero_()
        net[2].bias.zero_()
        net[2].weight[:, :, 1, 1] = torch.linalg.pinv(net[0].weight[:, :, 1, 1])  # ~identity on the centre taps
    dark, bright = _tiles(5, seed=1, scale=0.15), _tiles(1, seed=2)
    conv = convert_model(net, SPEC_X1, "tflite", tmp_path, "w8a8", tile=16, calib=dark + bright,
                         recipe=None)
    sess = open_converted("tflite", conv)
    with torch.inference_mode():
        ref = net(torch.from_numpy(bright[0])).numpy()
    assert float(ref.max()) > 0.5
    assert psnr(sess.run(bright[0]), ref) > 30.0


def test_tflite_w8a8_output_is_on_the_8bit_grid_up_to_white(tmp_path):
    """The clamped output (and the sum before it) is quantized over exactly [0, 1]: scale 1/255,
    pure white reachable (the averaged calibration ended at 0.969 on the built-in model)."""
    from ai_edge_litert.interpreter import Interpreter

    net = _clamped()
    conv = convert_model(net, SPEC_X2, "tflite", tmp_path, "w8a8", tile=16, calib=_tiles(6))
    interp = Interpreter(model_path=str(conv.path))
    scale, zero = interp.get_output_details()[0]["quantization"]
    assert scale == pytest.approx(1 / 255, rel=1e-6) and zero == -128
    details = {t["index"]: t for t in interp.get_tensor_details()}
    adds = [op for op in interp._get_ops_details() if op["op_name"] == "ADD"]
    assert adds
    assert details[adds[-1]["outputs"][0]]["quantization"][0] == pytest.approx(1 / 255, rel=1e-6)
