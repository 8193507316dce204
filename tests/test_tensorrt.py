"""TensorRT on Jetson: options derived from the manifest, provider wiring, `trt-build`.

No GPU here: the derivation and the options handed to ONNX Runtime are tested directly; building
a real engine runs only where the `tensorrt` package imports.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.bundle.manifest import Manifest, TensorContract
from restorekit.cli.main import app
from restorekit.core.errors import BadInputError
from restorekit.runtime.tensorrt import engine_plan, tensorrt_options, trt_cache_dir

HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None


def _manifest(precision="fp32", target="onnx", shape=(1, 3, None, None), tile=256, multiple_of=1, sha="ab" * 32):
    return Manifest(name="restorekit-x2", task="restore", scale=2, target=target, precision=precision,
                    input=TensorContract(name="input", shape=list(shape)), output=TensorContract(name="output"),
                    tiling={"tile": tile, "overlap": 32, "multiple_of": multiple_of},
                    files=[{"path": "model.onnx", "sha256": sha, "bytes": 1}])


@pytest.mark.parametrize("precision, fp16, int8", [("fp32", False, False), ("fp16", True, False), ("int8", True, True)])
def test_precision_flags_follow_the_bundle(precision, fp16, int8):
    plan = engine_plan(_manifest(precision))
    assert (plan.fp16, plan.int8) == (fp16, int8)
    opts = tensorrt_options(_manifest(precision), Path("/cache"))
    assert opts["trt_fp16_enable"] == str(fp16) and opts["trt_int8_enable"] == str(int8)


def test_fp16_bundle_with_layers_kept_in_fp32_is_built_strongly_typed():
    """The FP16 flag lets TensorRT lower the layers fp16 safety kept in fp32 (GFPGAN #483's solid
    colour): such a bundle is built strongly typed, and ONNX Runtime's provider runs it without FP16."""
    kept = _manifest("fp16")
    kept.recipe = {"scheme": "fp16", "fp16_kept_float": {"head": "activation max 1.6e+05 > 32768"}}
    plan = engine_plan(kept)
    assert plan.strongly_typed and not plan.fp16
    assert tensorrt_options(kept, Path("/cache"))["trt_fp16_enable"] == "False"
    assert not engine_plan(_manifest("fp16")).strongly_typed  # nothing kept: plain FP16


def test_engine_cache_path_is_one_safe_component_whatever_the_manifest_says(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path))
    hostile = _manifest(sha="../../" + "ab" * 32)
    hostile.name = "../../../etc/x y"
    path = trt_cache_dir(hostile)
    assert path.parent == tmp_path / "tensorrt" and "/" not in path.name and ".." not in path.name
    assert path.name.endswith("-" + "ab" * 8)


def test_dynamic_profile_from_the_tile_with_a_minimum_of_64():
    opts = tensorrt_options(_manifest(tile=256), Path("/c/e"))
    assert opts["trt_profile_min_shapes"] == "input:1x3x64x64"
    assert opts["trt_profile_opt_shapes"] == "input:1x3x256x256"
    assert opts["trt_profile_max_shapes"] == "input:1x3x256x256"
    assert opts["trt_engine_cache_enable"] == "True" and opts["trt_engine_cache_path"] == "/c/e"
    assert opts["trt_timing_cache_path"] == "/c/e"
    assert all(isinstance(v, str) for v in opts.values())  # onnxruntime wants strings


def test_profile_respects_the_size_multiple_and_fixed_shapes():
    plan = engine_plan(_manifest(tile=250, multiple_of=48))
    assert plan.min_hw == (96, 96) and plan.opt_hw == (288, 288) == plan.max_hw
    fixed = engine_plan(_manifest(shape=(1, 3, 512, 512)))
    assert fixed.min_hw == fixed.opt_hw == fixed.max_hw == (512, 512)


def test_detector_profile_covers_whole_photos_up_to_the_detection_cap():
    import dataclasses

    plan = engine_plan(dataclasses.replace(_manifest(tile=None), task="detect"))
    assert plan.min_hw == (64, 64) and plan.opt_hw == (640, 640) and plan.max_hw == (1600, 1600)


def test_only_onnx_nchw_bundles():
    with pytest.raises(BadInputError, match="from ONNX bundles"):
        engine_plan(_manifest(target="tflite"))


def test_engine_cache_is_keyed_by_model_checksum(monkeypatch, tmp_path):
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path))
    a, b = trt_cache_dir(_manifest(sha="a" * 64)), trt_cache_dir(_manifest(sha="b" * 64))
    assert a != b and a.parent == tmp_path / "tensorrt" and "aaaaaaaaaaaaaaaa" in a.name


def test_tensorrt_provider_gets_the_derived_options(monkeypatch, tmp_path):
    """Where onnxruntime offers TensorRT, the session asks for it first with the manifest's options."""
    import onnxruntime as ort

    from restorekit.runtime import onnx as onnx_backend

    seen = {}

    class Recorder:
        def __init__(self, path, sess_options=None, providers=None):
            seen["providers"] = providers
            self._real = real(path, sess_options=sess_options, providers=["CPUExecutionProvider"])

        def __getattr__(self, name):
            return getattr(self._real, name)

    real = ort.InferenceSession
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path))
    monkeypatch.setattr(ort, "get_available_providers",
                        lambda: ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(ort, "InferenceSession", Recorder)
    model = _tiny_onnx(tmp_path)
    m = _manifest("int8")
    session = onnx_backend.open_session(model, m, provider="tensorrt")
    name, opts = seen["providers"][0]
    assert name == "TensorrtExecutionProvider" and seen["providers"][1:] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert opts == tensorrt_options(m, trt_cache_dir(m)) and Path(opts["trt_engine_cache_path"]).is_dir()
    assert session.run(np.ones((1, 3, 8, 8), np.float32)).shape == (1, 3, 8, 8)


def test_tensorrt_falls_back_to_cpu_with_a_warning(tmp_path, monkeypatch):
    import onnxruntime as ort

    from restorekit.runtime import onnx as onnx_backend

    if "TensorrtExecutionProvider" in ort.get_available_providers():
        pytest.skip("this onnxruntime has TensorRT: no fallback to observe")
    monkeypatch.setenv("RESTOREKIT_CACHE", str(tmp_path))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        session = onnx_backend.open_session(_tiny_onnx(tmp_path), _manifest(), provider="tensorrt")
    assert session.device == "onnxruntime CPUExecutionProvider"
    assert any("TensorrtExecutionProvider is not available" in str(w.message) for w in caught)


@pytest.mark.skipif(HAS_TENSORRT, reason="tensorrt is installed: the absent-package message cannot be observed")
def test_trt_build_without_tensorrt_is_a_clear_error(tmp_path):
    from restorekit.bundle.manifest import write_manifest

    _tiny_onnx(tmp_path)
    write_manifest(tmp_path, _manifest())
    res = CliRunner().invoke(app, ["trt-build", str(tmp_path)])
    assert res.exit_code == 2
    assert "TensorRT is not available here" in res.output and "JetPack" in res.output


@pytest.mark.skipif(not HAS_TENSORRT, reason="the tensorrt package is not installed (it needs an NVIDIA GPU; none here)")
def test_trt_build_makes_an_engine(edge_bundles, tmp_path):
    res = CliRunner().invoke(app, ["trt-build", str(edge_bundles / "onnx-int8"), "--cache", str(tmp_path)])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "model.engine").stat().st_size > 0 and (tmp_path / "engine.json").is_file()


def _tiny_onnx(folder: Path) -> Path:
    """A 1-node ONNX model (Identity) with the bundle io names and dynamic H/W."""
    import onnx
    from onnx import TensorProto, helper

    io = lambda n: helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 3, "H", "W"])  # noqa: E731
    graph = helper.make_graph([helper.make_node("Identity", ["input"], ["output"])], "g", [io("input")], [io("output")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    path = folder / "model.onnx"
    onnx.save(model, str(path))
    return path
