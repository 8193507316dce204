"""Quantization recipes: validation, each scheme on each target (tiny model), and the sensitivity
search on a model with one planted sensitive layer (it must be the one kept in float)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.build.convert import convert_model
from restorekit.core.errors import BadInputError
from restorekit.core.metrics import psnr
from restorekit.models.spec import ModelSpec
from restorekit.quantize.calibration import calibration_tiles
from restorekit.quantize.recipe import (builtin_recipe, load_recipe, quantizable_layers, recipe_from_dict)

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
runner = CliRunner()


class TinyNet(nn.Module):
    """x + conv3(relu(conv2(relu(conv1(relu(conv0(x))))))): a small residual ReLU net."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv0 = nn.Conv2d(3, width, 3, padding=1)
        self.conv1 = nn.Conv2d(width, width, 3, padding=1)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.conv3 = nn.Conv2d(width, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        h = self.relu(self.conv0(x))
        h = self.relu(self.conv1(h))
        h = self.relu(self.conv2(h))
        return x + self.conv3(h)


def _tiny(seed=0) -> TinyNet:
    torch.manual_seed(seed)
    return TinyNet().eval()


def _planted() -> TinyNet:
    """conv2 made sensitive to weight quantization only: input channel 15 is dead (conv1 makes it
    relu(-1) = 0), and conv2 gives it a weight of 50 in every output channel. The function is
    unchanged, but conv2's per-channel int8 step becomes 50/127, which rounds its real weights away."""
    net = _tiny()
    with torch.no_grad():
        net.conv1.weight[15].zero_()
        net.conv1.bias[15] = -1.0
        net.conv2.weight[:, 15, 1, 1] = 50.0
    return net


SPEC = ModelSpec(name="tiny", architecture="TinyNet", task="restore", scale=1)


@pytest.fixture(scope="module")
def calib():
    return calibration_tiles(SAMPLES, tile=32, count=6)


def _fidelity(target: str, conv, model, tiles) -> float:
    """PSNR of the converted model against ``model``, outputs clamped to [0, 1] (what the user sees)."""
    from restorekit.build.convert import open_converted

    sess = open_converted(target, conv)
    with torch.inference_mode():
        return float(np.mean([psnr(np.clip(sess.run(t), 0, 1), model(torch.from_numpy(t)).clamp(0, 1).numpy())
                              for t in tiles]))


# --- recipes as data -------------------------------------------------------------------------


def test_recipe_yaml_round_trip_and_precedence(tmp_path):
    f = tmp_path / "r.yaml"
    f.write_text("scheme: w8a8\nop_types:\n  Linear: null\nop_names:\n  conv3: {weights: int8, activations: int16}\n"
                 "  conv0: null\ncalibration: {method: percentile, tiles: 8}\n")
    r = load_recipe(f)
    assert r.setting("conv3", "Conv2d").activations == "int16"
    assert r.setting("conv0", "Conv2d") is None
    assert r.setting("conv1", "Conv2d").activations == "int8"
    assert r.setting("head", "Linear") is None
    assert recipe_from_dict(r.to_dict()).to_dict() == r.to_dict()
    assert r.float_layers(quantizable_layers(_tiny())) == ["conv0"]
    assert r.split_prelus is False  # opt-in (bundle's int8 turns it on: INT8_SPLIT_PRELUS)
    split = recipe_from_dict({**r.to_dict(), "split_prelus": True})
    assert split.split_prelus is True and recipe_from_dict(split.to_dict()).split_prelus is True


@pytest.mark.parametrize("bad, match", [
    ({"scheme": "w4a4"}, "scheme 'w4a4' is unknown"),
    ({"scheme": "w8a8", "op_names": {"conv1": {"weights": None, "activations": "int8"}}}, "contradictory"),
    ({"scheme": "w8a8", "op_names": {"conv1": {"weights": "fp16", "activations": "int8"}}}, "contradictory"),
    ({"scheme": "w8a8", "op_names": {"conv1": {"weights": "int3"}}}, "unknown weights"),
    ({"scheme": "w8", "op_names": {"conv1": {"weights": "int8", "activations": "int8"}}}, "no calibrated activations"),
    ({"scheme": "w8a8", "op_types": {"Attention": None}}, "unknown op type"),
    ({"scheme": "w8a8", "budget_psnr": 45}, "applies to scheme mixed"),
    ({"scheme": "w8a8", "calibration": {"method": "entropy"}}, "calibration method"),
    ({"scheme": "w8a8", "quantise": True}, "unknown key"),
    ({"scheme": "w8a8", "equalization_alpha": 1.5}, "equalization_alpha must be a number from 0 to 1"),
    ({"scheme": "w8a8", "equalization_alpha": "strong"}, "equalization_alpha must be a number"),
    ({"scheme": "w8a8", "equalization_alpha": 0.8, "float_preparation": False}, "cannot go with float_preparation"),
])
def test_bad_recipes_are_rejected(bad, match):
    with pytest.raises(BadInputError, match=match):
        recipe_from_dict(bad)


def test_recipe_checked_against_target_and_model():
    layers = quantizable_layers(_tiny())
    with pytest.raises(BadInputError, match="unknown op 'body.99'"):
        recipe_from_dict({"scheme": "w8a8", "op_names": {"body.99": None}}).check("onnx", layers)
    with pytest.raises(BadInputError, match="coreml does not implement scheme 'w8a16'"):
        builtin_recipe("w8a16").check("coreml", layers)
    with pytest.raises(BadInputError, match="per-layer overrides are implemented for onnx and tflite"):
        recipe_from_dict({"scheme": "w8a8", "op_names": {"conv1": None}}).check("coreml", layers)
    with pytest.raises(BadInputError, match="palettized weights are a Core ML format"):
        recipe_from_dict({"scheme": "w8a8", "op_names": {"conv1": {"weights": "palette6"}}}).check("onnx", layers)


def test_cli_rejects_a_bad_recipe_before_any_work(tmp_path):
    f = tmp_path / "r.json"
    f.write_text('{"scheme": "w8a8", "op_names": {"body.99": null}}')
    out = tmp_path / "o"
    res = runner.invoke(app, ["quantize", "--recipe", str(f), "--target", "onnx", "--out", str(out)])
    assert res.exit_code == 2, res.output
    assert "unknown op 'body.99'" in res.stderr and "body.0" in res.stderr
    assert not out.exists() or not any(out.rglob("*"))
    f.write_text('{"scheme": "w8a8", "op_names": {"body.0": {"activations": "int8"}}}')
    res = runner.invoke(app, ["quantize", "--recipe", str(f), "--target", "onnx", "--out", str(out)])
    assert res.exit_code == 2 and "contradictory" in res.stderr


def test_calibration_folder_without_images_exits_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "notes.txt").write_text("not a photo")
    res = runner.invoke(app, ["quantize", "--scheme", "w8a16", "--calib", str(empty), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no readable images" in res.stderr


# --- every scheme on every target, tiny model ------------------------------------------------


@pytest.mark.parametrize("scheme, floor", [("fp16", 60.0), ("w8", 45.0), ("w8a8", 35.0), ("w8a16", 45.0)])
def test_onnx_schemes(tmp_path, calib, scheme, floor):
    import onnx

    net = _tiny()
    conv = convert_model(net, SPEC, "onnx", tmp_path, scheme, tile=32, calib=calib)
    graph = onnx.load(str(conv.path)).graph
    ops = [n.op_type for n in graph.node]
    inits = {i.name: i.data_type for i in graph.initializer}
    if scheme == "w8":  # weight-only: int8 weights behind DequantizeLinear, float activations
        assert "QuantizeLinear" not in ops and ops.count("DequantizeLinear") == 4
        assert sum(t == onnx.TensorProto.INT8 for t in inits.values()) == 8  # 4 weights + 4 zero points
    if scheme in ("w8a8", "w8a16"):
        want = onnx.TensorProto.UINT16 if scheme == "w8a16" else onnx.TensorProto.UINT8
        zps = [inits[n.input[2]] for n in graph.node if n.op_type == "QuantizeLinear" and n.input[2] in inits]
        assert zps and set(zps) == {want}
    if scheme == "fp16":
        assert onnx.TensorProto.FLOAT16 in inits.values()
    assert conv.recipe["scheme"] == scheme
    assert _fidelity("onnx", conv, net, calib) >= floor


class ModulatedNet(nn.Module):
    """A StyleGAN2-like modulated conv: its weight is a parameter times a style (a Mul in the graph,
    not a Conv's initializer), then a plain conv the recipe can keep float."""

    def __init__(self, width: int = 128):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width, 3, 7, 7) * 0.05)
        self.style = nn.Parameter(torch.rand(1, 3, 1, 1) + 0.5)
        self.head = nn.Conv2d(width, 3, 3, padding=1)

    def forward(self, x):
        h = torch.relu(nn.functional.conv2d(x, self.weight * self.style, padding=3))
        return x + 0.1 * self.head(h)


@pytest.mark.parametrize("keep_head_float", [False, True])
def test_onnx_w8_stores_computed_weights_as_int8(tmp_path, calib, keep_head_float):
    """w8 is where a big network's size goes: a modulated conv's weight feeds a Mul, not a Conv, and
    must be stored int8 too (GFPGAN was at 0.47 of fp32 when only Conv filters were). A layer the
    recipe keeps float keeps its weight float."""
    import onnx

    torch.manual_seed(0)
    net = ModulatedNet().eval()
    for d in "fw":
        (tmp_path / d).mkdir()
    fp32 = convert_model(net, SPEC, "onnx", tmp_path / "f", "fp32", tile=32)
    recipe = recipe_from_dict({"scheme": "w8", **({"op_names": {"head": None}} if keep_head_float else {})})
    w8 = convert_model(net, SPEC, "onnx", tmp_path / "w", "w8", tile=32, calib=calib, recipe=recipe)
    graph = onnx.load(str(w8.path)).graph
    int8 = {i.name for i in graph.initializer if i.data_type == onnx.TensorProto.INT8 and i.name.endswith("_int8")}
    readers = {n.output[0]: n for n in graph.node if n.op_type == "DequantizeLinear"}
    fed = {n.op_type for n in graph.node for i in n.input if i in readers}
    assert "Mul" in fed  # the modulated weight
    assert ("Conv" in fed) is not keep_head_float  # the head's filter, unless kept float
    assert len(int8) == (1 if keep_head_float else 2)
    if not keep_head_float:
        assert w8.path.stat().st_size < fp32.path.stat().st_size / 3
    assert _fidelity("onnx", w8, net, calib) >= 45.0


def test_onnx_int8_pads_narrow_convs_to_16_channels_without_changing_the_output(tmp_path, calib, monkeypatch):
    """ORT's int8 conv is slow below 16 output channels: TinyNet's 16 -> 3 conv3 gets 13 zero
    filters and a Slice back to 3 channels; the quantized model computes exactly what it did
    unpadded (same calibration). A conv the recipe keeps in float is left as it is."""
    import onnx
    from onnx import numpy_helper

    from restorekit.build.convert import open_converted
    from restorekit.quantize import onnx as onnx_quant

    net = _tiny()
    for d in "puf":
        (tmp_path / d).mkdir()
    plain = recipe_from_dict({"scheme": "w8a8", "float_preparation": False})
    padded = convert_model(net, SPEC, "onnx", tmp_path / "p", "w8a8", tile=32, calib=calib, recipe=plain)
    graph = onnx.load(str(padded.path)).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    widths = sorted(inits[producers[n.input[1]].input[0]].shape[0] for n in graph.node if n.op_type == "Conv")
    assert widths == [16, 16, 16, 16]  # conv3's 3 output channels padded to 16
    slices = [n for n in graph.node if n.op_type == "Slice"]
    assert len(slices) == 1 and int(inits[slices[0].input[2]][0]) == 3
    assert list(padded.recipe["padded_convs"].values()) == ["3 -> 16 output channels (zero filters, sliced off)"]

    monkeypatch.setattr(onnx_quant, "NARROW_CONV_PAD", 0)
    unpadded = convert_model(net, SPEC, "onnx", tmp_path / "u", "w8a8", tile=32, calib=calib, recipe=plain)
    assert "Slice" not in [n.op_type for n in onnx.load(str(unpadded.path)).graph.node]
    a, b = open_converted("onnx", padded), open_converted("onnx", unpadded)
    for t in calib:
        np.testing.assert_array_equal(a.run(t), b.run(t))

    monkeypatch.setattr(onnx_quant, "NARROW_CONV_PAD", 16)
    keep = recipe_from_dict({"scheme": "w8a8", "float_preparation": False, "op_names": {"conv3": None}})
    conv = convert_model(net, SPEC, "onnx", tmp_path / "f", "w8a8", tile=32, calib=calib, recipe=keep)
    assert "Slice" not in [n.op_type for n in onnx.load(str(conv.path)).graph.node]
    assert "padded_convs" not in conv.recipe


@pytest.mark.parametrize("scheme, floor", [("fp16", 60.0), ("w8", 45.0), ("w8a8", 30.0), ("w8a16", 40.0)])
def test_tflite_schemes(tmp_path, calib, scheme, floor):
    net = _tiny()
    conv = convert_model(net, SPEC, "tflite", tmp_path, scheme, tile=32, calib=calib)
    assert conv.input.dtype == ("int8" if scheme == "w8a8" else "int16" if scheme == "w8a16" else "float32")
    assert conv.recipe["scheme"] == scheme
    assert _fidelity("tflite", conv, net, calib) >= floor


@pytest.mark.parametrize("scheme", ["w8", "palettize6"])
def test_coreml_weight_compression_is_built_and_simulated(tmp_path, calib, scheme):
    from restorekit.eval.structure import coreml_structure
    from restorekit.quantize.coreml import with_weights

    pytest.importorskip("coremltools")
    net = _tiny()
    conv = convert_model(net, SPEC, "coreml", tmp_path, scheme, tile=32)
    manifest = type("M", (), {"precision": scheme, "input": conv.input, "output": conv.output, "target": "coreml"})()
    st = coreml_structure(conv.path, manifest)
    assert st["ok"], st["checks"]
    sim, replaced = with_weights(net, conv.decompressed_weights)
    assert replaced == 2  # conv1, conv2 (conv0/conv3 have 432 weights: under the compression threshold)
    w = sim.conv2.weight.detach().numpy()
    assert not np.array_equal(w, net.conv2.weight.detach().numpy())
    if scheme == "palettize6":  # one 64-entry look-up table for the tensor
        assert len(np.unique(w)) <= 64
    else:  # int8 per output channel: every weight an integer multiple of its channel's step
        step = np.abs(w).reshape(16, -1).max(axis=1) / 127
        k = w.reshape(16, -1) / step[:, None]
        assert np.abs(k - np.round(k)).mean() < 0.05  # (fp16 storage blurs the grid slightly; float weights: ~0.25)
    with torch.inference_mode():
        x = torch.from_numpy(calib[0])
        d = psnr(sim(x).numpy(), net(x).numpy())
    assert 35.0 < d < 150.0  # changed by compression, but still close


def test_coreml_w8a8_quantizes_activations_in_the_program_and_simulates(tmp_path, calib):
    from restorekit.eval.structure import coreml_structure

    pytest.importorskip("coremltools")
    net = _tiny()
    conv = convert_model(net, SPEC, "coreml", tmp_path, "w8a8", tile=32, calib=calib)
    manifest = type("M", (), {"precision": "w8a8", "input": conv.input, "output": conv.output, "target": "coreml"})()
    st = coreml_structure(conv.path, manifest)
    assert st["ok"], st["checks"]
    assert st["ops"]["quantize"] >= st["ops"]["conv"] == 4  # every conv reads int8 activations
    assert conv.recipe["float_preparation"]["gptq_rounded_convs"] == 4
    x = torch.from_numpy(calib[0])
    with torch.inference_mode():
        d = psnr(conv.simulation(x).numpy(), net(x).numpy())
    assert 30.0 < d < 80.0  # int8 activations: visibly quantized, still close
    with pytest.raises(BadInputError, match="calibration images"):
        convert_model(net, SPEC, "coreml", tmp_path / "none", "w8a8", tile=32, calib=None)


def test_coreml_w8a8_uses_the_image_grid_and_the_int8_weight_grid(tmp_path, calib):
    """The program's input quantizer is the 8-bit image itself (uint8, scale 1/255), not
    coremltools' symmetric int8 over [-1, 1]; its int8 weights are the prepared weights on the
    grid of ONNX Runtime and LiteRT (scale max|w| / 127, where GPTQ put them), not rounded again
    onto coremltools' max|w| / 127.5."""
    ct = pytest.importorskip("coremltools")
    from restorekit.quantize.coreml import decompressed_weights
    from restorekit.quantize.prepare import prepare_for_int8

    conv = convert_model(_tiny(), SPEC, "coreml", tmp_path, "w8a8", tile=32, calib=calib)
    assert "x" in conv.recipe.get("unsigned_activations", ()) and conv.recipe.get("weight_grid", "").endswith("on 4 weights")
    mlmodel = ct.models.MLModel(str(conv.path), skip_model_load=True)
    fn = next(iter(mlmodel.get_spec().mlProgram.functions.values()))
    ops = list(fn.block_specializations[fn.opset].operations)
    consts = {op.outputs[0].name: op.attributes["val"].immediateValue.tensor for op in ops if op.type == "const"}
    first = next(op for op in ops if op.type == "quantize")
    assert first.inputs["input"].arguments[0].name.startswith("input")  # the model input's quantizer
    assert list(consts[first.inputs["output_dtype"].arguments[0].name].strings.values) == ["uint8"]
    scale = np.frombuffer(consts[first.inputs["scale"].arguments[0].name].bytes.values, dtype=np.float16)
    assert float(scale[0]) == pytest.approx(1 / 255, rel=1e-3)
    prepared = [m.weight.detach().numpy() for m in prepare_for_int8(_tiny(), calib)[0].modules()
                if isinstance(m, nn.Conv2d)]
    program = decompressed_weights(mlmodel)
    assert len(program) == 2  # the two 16x16 convs (the 432-weight ones are below the size it lists)

    def steps_off(w, ref):  # largest distance, in int8 steps, from the prepared weights on the 1/127 grid
        step = (np.abs(ref).reshape(len(ref), -1).max(axis=1) / 127).reshape(-1, 1, 1, 1)
        return float((np.abs(w - np.round(ref / step) * step) / step).max())

    for w in program:
        off = min(steps_off(w, ref) for ref in prepared if ref.shape == w.shape)
        assert off < 0.15, off  # fp16 scale storage only (2^-11 of up to 127 steps); the /127.5 grid: up to 1 step


# --- sensitivity analysis and mixed precision ------------------------------------------------


def test_sensitivity_ranks_the_planted_layer_first(calib):
    from restorekit.quantize.mixed import layer_sensitivity

    sens = layer_sensitivity(_planted(), calib, quantizable_layers(_planted()))
    assert min(sens, key=sens.get) == "conv2"
    others = [v for k, v in sens.items() if k != "conv2"]
    assert sens["conv2"] < min(others) - 10


@pytest.mark.parametrize("target", ["onnx", "tflite"])
def test_mixed_keeps_exactly_the_planted_layer_in_float(tmp_path, calib, target):
    net = _planted()
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    plain = recipe_from_dict({"scheme": "w8a8", "float_preparation": False})
    naive = _fidelity(target, convert_model(net, SPEC, target, tmp_path / "a", "w8a8", tile=32, calib=calib,
                                            recipe=plain), net, calib)
    budget = 48.0
    assert naive < budget - 5  # the planted layer ruins plain w8a8
    mixed = recipe_from_dict({"scheme": "mixed", "budget_psnr": budget, "float_preparation": False})
    conv = convert_model(net, SPEC, target, tmp_path / "b", "mixed", tile=32, calib=calib, recipe=mixed)
    search = conv.recipe["mixed_search"]
    assert search["float_layers"] == ["conv2"] and search["met"]
    assert _fidelity(target, conv, net, calib) >= budget


def test_tflite_layer_kept_in_float_keeps_its_prelu_in_float(tmp_path, calib):
    """A float layer on LiteRT is the conv and the ops that read its output alone (the PReLU's MUL
    and MAXIMUM): its output is not re-quantized to int8 for the activation (what made LiteRT
    ``mixed`` gain nothing from float layers)."""
    from ai_edge_litert.interpreter import Interpreter

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8),
                        nn.Conv2d(8, 3, 3, padding=1)).eval()
    recipe = recipe_from_dict({"scheme": "w8a8", "float_preparation": False, "op_names": {"2": None}})
    conv = convert_model(net, SPEC, "tflite", tmp_path, "w8a8", tile=32, calib=calib, recipe=recipe)
    assert conv.recipe["float_layers"] == ["2"]
    interp = Interpreter(model_path=str(conv.path))
    dtype = {t["index"]: t["dtype"] for t in interp.get_tensor_details()}
    ops = [op for op in interp._get_ops_details() if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE")]
    kinds = [(op["op_name"], dtype[op["outputs"][0]]) for op in ops]
    convs = [i for i, (name, _) in enumerate(kinds) if name == "CONV_2D"]
    assert len(convs) == 3, kinds
    first, float_layer, last = convs
    assert all(dt == np.int8 for _, dt in kinds[first:float_layer]), kinds  # conv 0 + its PReLU: int8
    assert all(dt == np.float32 for _, dt in kinds[float_layer:last]), kinds  # conv 2 + its PReLU: float
    assert {name for name, _ in kinds[float_layer:last]} >= {"CONV_2D", "MUL", "MAXIMUM"}, kinds
    assert kinds[last][1] == np.int8, kinds


def test_onnx_prelu_is_max_form_in_float_between_int8_convs_and_a_float_layer_keeps_it(tmp_path, calib):
    """ONNX gets PReLU as Max(x, Mul(x, a)) (ORT's PRelu kernel is 6x slower). In w8a8 the Mul and
    Max stay float between the Q/DQ pairs, the slopes a float constant; a layer kept in float
    takes its max-form PReLU with it, so the next conv reads a float tensor, not a re-quantized one."""
    import onnx

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1), nn.PReLU(8),
                        nn.Conv2d(8, 3, 3, padding=1)).eval()
    recipe = recipe_from_dict({"scheme": "w8a8", "float_preparation": False, "op_names": {"2": None}})
    conv = convert_model(net, SPEC, "onnx", tmp_path, "w8a8", tile=32, calib=calib, recipe=recipe)
    assert conv.recipe["rewrites"] == {"prelu": 2} and conv.recipe["float_layers"] == ["2"]
    graph = onnx.load(str(conv.path)).graph
    ops = [n.op_type for n in graph.node]
    assert "PRelu" not in ops and ops.count("Mul") == 2 and ops.count("Max") == 2, ops
    producer = {o: n for n in graph.node for o in n.output}
    inits = {i.name for i in graph.initializer}
    for mx in (n for n in graph.node if n.op_type == "Max"):
        mul = next((producer[i] for i in mx.input if i in producer and producer[i].op_type == "Mul"), None)
        assert mul is not None, mx  # Mul -> Max directly, no Q/DQ between
        (slope,) = [i for i in mul.input if i not in mx.input]
        assert slope in inits or producer[slope].op_type != "DequantizeLinear"  # float slopes, not int8 ones
    convs = [n for n in graph.node if n.op_type == "Conv"]
    assert len(convs) == 3
    w_dq = [producer.get(c.input[1]) for c in convs]
    assert w_dq[0].op_type == "DequantizeLinear" and w_dq[2].op_type == "DequantizeLinear"
    assert convs[1].input[1] in inits  # the float layer's weights stay float
    last_in = producer[convs[2].input[0]]
    assert last_in.op_type == "Max", last_in.op_type  # it reads the float layer's PReLU, not a Q/DQ of it
    assert producer[convs[1].input[0]].op_type == "Max"  # the float layer reads the float PReLU before it
    assert _fidelity("onnx", conv, net, calib) > 35.0
