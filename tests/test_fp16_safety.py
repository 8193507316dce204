"""fp16 safety: the layers whose values overflow fp16 are found on calibration tiles and kept in
fp32 (ONNX block list, Core ML per-op precision, TFLite weights), and recorded in the recipe.

ONNX Runtime's x86 CPU kernels compute an fp16 graph in float32 (it casts around its fp16 nodes),
so an overflow does not show there; the fp16 arithmetic of GPUs, TensorRT, ARM CPUs and the
Neural Engine is reproduced with onnx's reference evaluator, which computes in the graph's types."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from restorekit.build.convert import convert_model
from restorekit.core.metrics import psnr
from restorekit.core.targets import MIN_FIDELITY_DB
from restorekit.models.spec import ModelSpec
from restorekit.quantize.calibration import calibration_tiles
from restorekit.quantize.fp16 import FP16_SAFE_LIMIT, TOP_LEVEL, fp16_unsafe_layers, half_except
from tests.conftest import SAMPLES

SPEC = ModelSpec(name="planted", architecture="Planted", task="restore", scale=1)
KEPT = {"head", "act", "tail"}  # head writes ~1.6e5, act reads and writes it, tail reads it


class Planted(nn.Module):
    """x + tail(act(head(x))) + 0.1 * mix(x): head's output reaches ~1.6e5 (beyond fp16's 65504)
    and tail scales it back into a small textured residual; mix is an ordinary conv fp16 handles."""

    def __init__(self):
        super().__init__()
        self.head = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.ReLU()
        self.tail = nn.Conv2d(8, 3, 3, padding=1)
        self.mix = nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x):
        return x + self.tail(self.act(self.head(x))) + 0.1 * self.mix(x)


def _planted() -> Planted:
    torch.manual_seed(0)
    net = Planted().eval()
    with torch.no_grad():
        net.head.weight.mul_(1.5e5)  # |w| <= 2.9e4: the weights themselves fit fp16
        net.head.bias.mul_(1.5e5)
        net.tail.weight.mul_(6e-6)
        net.tail.bias.zero_()
    return net


class DeadChannel(nn.Module):
    """x + conv2(relu(conv1(relu(conv0(x))))) where conv0's channel 7 is always 0 (relu(-1)) and conv1
    weighs it 1e5: the function is ordinary, but conv1's weights do not fit fp16 (inf * 0 = NaN)."""

    def __init__(self):
        super().__init__()
        self.conv0, self.conv1, self.conv2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x):
        return x + 0.1 * self.conv2(self.relu(self.conv1(self.relu(self.conv0(x)))))


def _dead_channel() -> DeadChannel:
    torch.manual_seed(1)
    net = DeadChannel().eval()
    with torch.no_grad():
        net.conv0.weight[7].zero_()
        net.conv0.bias[7] = -1.0
        net.conv1.weight[:, 7] = 1e5
    return net


@pytest.fixture(scope="module")
def calib():
    return calibration_tiles(SAMPLES, tile=32, count=8)


@pytest.fixture(scope="module")
def crops():  # held-out crops (another seed) to measure on
    return calibration_tiles(SAMPLES, tile=32, count=4, seed=7)


def _reference(net, tiles) -> list[np.ndarray]:
    with torch.inference_mode():
        return [net(torch.from_numpy(t)).numpy() for t in tiles]


def _fp16_arithmetic(path, tiles) -> list[np.ndarray]:
    """An ONNX model run in its own types (fp16 nodes compute in fp16), nodes sorted for onnx's evaluator."""
    import onnx
    from onnx.reference import ReferenceEvaluator

    model = onnx.load(str(path))
    known = {i.name for i in model.graph.input} | {i.name for i in model.graph.initializer} | {""}
    nodes, order = list(model.graph.node), []
    while nodes:
        ready = [n for n in nodes if all(i in known for i in n.input)]
        assert ready, "the graph has a cycle or a missing input"
        for n in ready:
            order.append(n)
            known.update(n.output)
            nodes.remove(n)
    del model.graph.node[:]
    model.graph.node.extend(order)
    ev = ReferenceEvaluator(model)
    with np.errstate(all="ignore"):
        return [ev.run(None, {model.graph.input[0].name: t})[0].astype(np.float32) for t in tiles]


def _fidelity(outs, refs) -> tuple[float, float]:
    """(mean PSNR in dB, with non-finite values as 0; share of non-finite values)."""
    bad = float(np.mean([np.mean(~np.isfinite(o)) for o in outs]))
    return float(np.mean([psnr(np.nan_to_num(o, nan=0.0, posinf=0.0, neginf=0.0), r) for o, r in zip(outs, refs)])), bad


# --- detection ----------------------------------------------------------------------------------


def test_detection_finds_exactly_the_planted_layers(calib):
    net = _planted()
    kept = fp16_unsafe_layers(net, calib)
    assert set(kept) == KEPT, kept
    assert all(f"> {FP16_SAFE_LIMIT:.0f}" in why and why.startswith("activation max") for why in kept.values())
    assert float(kept["head"].split()[2]) > 65504  # the recorded peak is the real one (~1.6e5)


def test_detection_attributes_functional_ops_to_the_module_running_them():
    class Attention(nn.Module):
        def __init__(self):
            super().__init__()
            self.q = nn.Linear(3, 3, bias=False)

        def forward(self, t):  # q(t) stays below the limit; the functional q(t) @ t^T does not
            return torch.softmax(self.q(t) @ t.transpose(1, 2), -1) @ t

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = Attention()

        def forward(self, x):
            t = self.attn(x.flatten(2).transpose(1, 2))
            return (t * 1e5 / 1e5).transpose(1, 2).reshape(x.shape)  # top-level ops beyond fp16 too

    net = Net().eval()
    with torch.no_grad():
        net.attn.q.weight.copy_(5000 * torch.eye(3))
    kept = fp16_unsafe_layers(net, [np.ones((1, 3, 4, 4), np.float32)])
    assert set(kept) == {"attn", TOP_LEVEL}, kept  # not attn.q: its own values peak at 5000
    assert kept["attn"].startswith("activation max 1.5e+04")


def test_weights_beyond_fp16_are_found_and_ordinary_layers_left_alone(calib):
    kept = fp16_unsafe_layers(_dead_channel(), calib)
    assert kept == {"conv1": "weight max 1e+05 > 65504"}


# --- ONNX ---------------------------------------------------------------------------------------


def test_plain_fp16_onnx_of_the_planted_net_breaks(tmp_path, crops):
    from onnxruntime.transformers.float16 import convert_float_to_float16
    import onnx

    net = _planted()
    conv = convert_model(net, SPEC, "onnx", tmp_path, "fp32", tile=32)
    plain = tmp_path / "plain-fp16.onnx"
    onnx.save(convert_float_to_float16(onnx.load(str(conv.path)), keep_io_types=True), str(plain))
    db, bad = _fidelity(_fp16_arithmetic(plain, crops), _reference(net, crops))
    print(f"plain fp16 ONNX (fp16 arithmetic): {db:.2f} dB, {bad:.1%} non-finite")
    assert bad > 0 or db < 20.0


def test_restorekit_fp16_onnx_keeps_the_planted_layers_in_fp32(tmp_path, calib, crops):
    import onnx

    from restorekit.runtime.onnx import OnnxSession

    net = _planted()
    conv = convert_model(net, SPEC, "onnx", tmp_path, "fp16", tile=32, calib=calib)
    assert set(conv.recipe["fp16_kept_float"]) == KEPT
    assert conv.recipe["fp16_kept_float_nodes"] == 3 and conv.recipe["scheme"] == "fp16"
    assert "8188" in conv.recipe["fp16_check"]
    graph = onnx.load(str(conv.path)).graph
    weights = {i.name: i.data_type for i in graph.initializer}
    producers = {o: n for n in graph.node for o in n.output}
    float32, float16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16

    def stored(name: str) -> int:  # a weight's stored type, behind the converter's casts
        return weights[name] if name in weights else stored(producers[name].input[0])

    convs = [stored(n.input[1]) for n in graph.node if n.op_type == "Conv"]
    assert sorted(convs) == sorted([float32, float32, float16])  # head and tail weights fp32, mix fp16
    # head -> act -> tail pass their values in fp32, with no trip through fp16 between them
    relu = next(n for n in graph.node if n.op_type == "Relu")
    assert producers[relu.input[0]].op_type == "Conv"
    assert any(producers.get(n.input[0]) is relu for n in graph.node if n.op_type == "Conv")
    assert conv.recipe["fp32_values_between_float_nodes"] >= 2
    refs = _reference(net, crops)
    db16, bad = _fidelity(_fp16_arithmetic(conv.path, crops), refs)
    sess = OnnxSession(conv.path, conv.input, conv.output)
    db_ort, _ = _fidelity([sess.run(t) for t in crops], refs)
    print(f"restorekit fp16 ONNX: {db16:.2f} dB in fp16 arithmetic, {db_ort:.2f} dB in onnxruntime")
    assert bad == 0 and db16 >= 60.0
    assert db_ort >= 60.0


# --- Core ML ------------------------------------------------------------------------------------


def test_coreml_fp16_keeps_the_planted_ops_in_fp32_and_simulates_so(tmp_path, calib, crops):
    ct = pytest.importorskip("coremltools")
    from restorekit.eval.structure import coreml_structure

    net = _planted()
    conv = convert_model(net, SPEC, "coreml", tmp_path, "fp16", tile=32, calib=calib)
    assert set(conv.recipe["fp16_kept_float"]) == KEPT
    spec = ct.models.MLModel(str(conv.path), skip_model_load=True).get_spec()
    dtypes: dict[str, list[int]] = {}
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            if op.type in ("conv", "relu", "add", "mul"):
                dtypes.setdefault(op.type, []).append(op.outputs[0].type.tensorType.dataType)
    fp16, fp32 = 10, 11  # MIL DataType
    assert sorted(dtypes["conv"]) == [fp16, fp32, fp32]  # head and tail in fp32, mix in fp16
    assert dtypes["relu"] == [fp32] and set(dtypes["add"]) == {fp16}  # act fp32; the top-level sum fp16
    manifest = type("M", (), {"precision": "fp16", "input": conv.input, "output": conv.output, "target": "coreml",
                              "recipe": conv.recipe})()
    st = coreml_structure(conv.path, manifest)
    assert st["ok"], st["checks"]
    refs = _reference(net, crops)
    with torch.inference_mode():
        kept = [half_except(net, conv.recipe["fp16_kept_float"])(torch.from_numpy(t).half()).float().numpy() for t in crops]
        plain = [half_except(net)(torch.from_numpy(t).half()).float().numpy() for t in crops]
    db_kept, bad_kept = _fidelity(kept, refs)
    db_plain, bad_plain = _fidelity(plain, refs)
    print(f"PyTorch fp16 simulation: {db_plain:.2f} dB plain ({bad_plain:.1%} non-finite), {db_kept:.2f} dB kept")
    assert bad_plain > 0 or db_plain < 20.0
    assert bad_kept == 0 and db_kept >= 60.0


# --- TFLite -------------------------------------------------------------------------------------


def test_tflite_fp16_computes_in_float32_and_keeps_overflowing_weights_float(tmp_path, calib, crops):
    pytest.importorskip("ai_edge_quantizer")
    from restorekit.build.convert import open_converted

    net = _planted()  # activations beyond fp16 are no matter: TFLite's fp16 computes in float32
    conv = convert_model(net, SPEC, "tflite", tmp_path, "fp16", tile=32, calib=calib)
    assert conv.recipe["fp16_kept_float"] == {} and "float32" in conv.recipe["fp16_check"]
    db, bad = _fidelity([open_converted("tflite", conv).run(t) for t in crops], _reference(net, crops))
    print(f"TFLite fp16, planted activations: {db:.2f} dB")  # head's fp16 weights round its 1.6e5 outputs
    assert bad == 0 and db >= MIN_FIDELITY_DB["fp16"], db
    net = _dead_channel()
    (tmp_path / "dead").mkdir()
    conv = convert_model(net, SPEC, "tflite", tmp_path / "dead", "fp16", tile=32, calib=calib)
    assert conv.recipe["fp16_kept_float"] == {"conv1": "weight max 1e+05 > 65504"}
    assert conv.recipe["float_layers"] == ["conv1"]
    db, bad = _fidelity([open_converted("tflite", conv).run(t) for t in crops], _reference(net, crops))
    print(f"TFLite fp16, weights beyond fp16 kept float: {db:.2f} dB")
    assert bad == 0 and db >= 60.0, db


# --- the build ----------------------------------------------------------------------------------


def test_bundle_build_gives_fp16_its_own_tiles_and_records_the_kept_layers(tmp_path, monkeypatch):
    """build_bundles with fp16 alone (no int8 calibration): a planted Compact checkpoint."""
    from spandrel.architectures.Compact import Compact

    from restorekit.build.bundles import build_bundles
    from restorekit.bundle.manifest import read_manifest

    pytest.importorskip("coremltools")
    torch.manual_seed(0)
    net = Compact(num_feat=8, num_conv=3, upscale=2)
    with torch.no_grad():
        net.body[0].weight.mul_(1.5e5)
        net.body[0].bias.mul_(1.5e5)
        net.body[2].weight.mul_(1e-5)
        net.body[-1].weight.mul_(0.05)
        net.body[-1].bias.zero_()
    ckpt = tmp_path / "planted-compact-x2.pth"
    torch.save(net.state_dict(), ckpt)
    results = build_bundles(str(ckpt), tmp_path / "out", targets=["onnx", "coreml"], precisions=["fp16"],
                            calib_dir=SAMPLES, eval_dir=SAMPLES, tile=32, eval_count=2, latency_runs=1)
    for r in results:
        m = read_manifest(r.path)
        kept = m.recipe["fp16_kept_float"]
        assert {"body.0", "body.1", "body.2"} <= set(kept) and "body.4" not in kept, kept
        assert r.passed, r.detail
    coreml = read_manifest(next(r.path for r in results if r.target == "coreml"))
    assert coreml.metrics["structure_ok"] and coreml.metrics["simulated_fp16_psnr_db"] >= 45.0
    onnx = read_manifest(next(r.path for r in results if r.target == "onnx"))
    assert onnx.metrics["simulated_fp16_psnr_db"] >= 45.0  # its fp16 arithmetic, not only ORT CPU's float32

    # fp16 safety off: ORT's CPU (float32 compute) would pass it; the fp16 arithmetic gate does not
    monkeypatch.setattr("restorekit.quantize.fp16.fp16_unsafe_layers", lambda *a, **k: {})
    bare = build_bundles(str(ckpt), tmp_path / "bare", targets=["onnx"], precisions=["fp16"],
                         calib_dir=SAMPLES, eval_dir=SAMPLES, tile=32, eval_count=2, latency_runs=1)
    m = read_manifest(bare[0].path)
    assert m.metrics["fidelity_psnr_db"] >= MIN_FIDELITY_DB["fp16"]  # ORT CPU: float32 compute, no overflow
    assert not bare[0].passed and m.metrics["simulated_fp16_psnr_db"] < 30.0, bare[0].detail
    assert "fp16 arithmetic (PyTorch half)" in bare[0].detail


def test_core_ml_fp16_simulation_without_a_cpu_half_kernel_is_skipped_not_a_crash():
    """LaMa's FFT has no fp16 kernel on CPU: the Core ML fp16 bundle is then checked structurally
    (the simulation says None) instead of the whole `bundle` call stopping."""
    from restorekit.build.bundles import simulate_fp16
    from restorekit.eval.fidelity import EvalTile

    class Spectrum(torch.nn.Module):
        def forward(self, x):
            return torch.fft.irfftn(torch.fft.rfftn(x, dim=(-2, -1), norm="ortho"), s=x.shape[-2:], dim=(-2, -1),
                                    norm="ortho")

    x = np.random.default_rng(0).random((1, 3, 16, 16), dtype=np.float32)
    tiles = [EvalTile("t", x)]
    with torch.inference_mode():
        refs = [Spectrum()(torch.from_numpy(x)).numpy()]
    try:
        Spectrum()(torch.from_numpy(x).half())
        pytest.skip("this torch build has a CPU fp16 FFT")
    except (NotImplementedError, RuntimeError):
        pass
    assert simulate_fp16(Spectrum(), tiles, refs) is None
    conv = torch.nn.Conv2d(3, 3, 3, padding=1)
    with torch.inference_mode():
        ref = [conv(torch.from_numpy(x)).numpy()]
    assert simulate_fp16(conv, tiles, ref) > 45


def test_fp16_simulation_runs_lamas_fourier_units_as_dft_matmuls():
    """LaMa's Fourier unit (orthonormal rfftn -> conv -> irfftn) has no CPU fp16 FFT: its fp16
    arithmetic is simulated through the exact DFT-matmul rewrite, so LaMa's fp16 Core ML bundle gets
    a number, and a planted overflow inside the unit shows in it."""
    from spandrel.architectures.LaMa.__arch.LaMa import FourierUnit

    from restorekit.build.bundles import simulate_fp16
    from restorekit.eval.fidelity import EvalTile

    torch.manual_seed(0)
    unit = FourierUnit(3, 3).eval()
    x = np.random.default_rng(0).random((1, 3, 32, 32), dtype=np.float32)
    tiles = [EvalTile("t", x)]
    with torch.inference_mode():
        refs = [unit(torch.from_numpy(x)).numpy()]
    assert 40 < simulate_fp16(unit, tiles, refs) < 120  # fp16 rounding, not exact
    with torch.no_grad():
        unit.conv_layer.weight.mul_(2e5)  # spectra beyond 65504 in fp16
    with torch.inference_mode():
        refs = [unit(torch.from_numpy(x)).numpy()]
    assert simulate_fp16(unit, tiles, refs) < 30
