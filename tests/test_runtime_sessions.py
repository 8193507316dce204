"""Runtime sessions: provider fallback, io quantization, manifest round trip."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.bundle.manifest import Manifest, TensorContract, read_manifest, write_manifest
from restorekit.core.errors import BadInputError, ChecksumError
from restorekit.runtime.onnx import select_providers
from restorekit.runtime.session import from_model_output, to_model_input


def test_provider_fallback_chain():
    cpu_only = ["CPUExecutionProvider"]
    assert select_providers("tensorrt", cpu_only) == (["CPUExecutionProvider"],
                                                      ["TensorrtExecutionProvider", "CUDAExecutionProvider"])
    jetson = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert select_providers("tensorrt", jetson)[0] == jetson
    assert select_providers("cuda", jetson)[0] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    with pytest.raises(BadInputError, match="unknown provider"):
        select_providers("npu", cpu_only)


def test_int8_io_round_trip_reaches_black_and_white():
    c = TensorContract(name="x", layout="NHWC", dtype="int8", shape=[1, 4, 4, 3],
                       quant={"scale": 1 / 255, "zero_point": -128})
    x = np.linspace(0, 1, 48, dtype=np.float32).reshape(1, 3, 4, 4)
    q = to_model_input(x, c)
    assert q.dtype == np.int8 and q.shape == (1, 4, 4, 3)
    assert q.min() == -128 and q.max() == 127
    back = from_model_output(q, c)
    assert back.shape == x.shape and np.abs(back - x).max() <= 0.5 / 255 + 1e-6


def test_manifest_round_trip_and_tamper(tmp_path):
    (tmp_path / "model.onnx").write_bytes(b"onnx bytes")
    m = Manifest(name="n", task="sr", scale=2, target="onnx", precision="fp32",
                 input=TensorContract(name="input"), output=TensorContract(name="output"))
    write_manifest(tmp_path, m)
    back = read_manifest(tmp_path)
    assert back.to_dict()["files"] == [{"path": "model.onnx", "sha256": back.files[0]["sha256"], "bytes": 10}]
    (tmp_path / "model.onnx").write_bytes(b"onnx bytez")
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        read_manifest(tmp_path)


def test_manifest_path_cannot_escape_bundle(tmp_path):
    import json

    (tmp_path / "model.onnx").write_bytes(b"x")
    m = Manifest(name="n", task="sr", scale=2, target="onnx", precision="fp32",
                 input=TensorContract(name="input"), output=TensorContract(name="output"))
    write_manifest(tmp_path, m)
    raw = json.loads((tmp_path / "manifest.json").read_text())
    raw["files"][0]["path"] = "../outside.onnx"
    (tmp_path / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(BadInputError, match="escapes the bundle"):
        read_manifest(tmp_path)


def test_tflite_session_uses_every_core_unless_told(monkeypatch):
    """LiteRT's own default runs XNNPACK on one thread; the session asks for every core this process
    may use (core/threads.py, as the ONNX sessions do), and passes an explicit --threads through."""
    import ai_edge_litert.interpreter as litert

    from restorekit.runtime import tflite

    asked = []

    class Recorder:
        def __init__(self, model_path, num_threads=None, **_):
            asked.append(num_threads)
            raise RuntimeError("stop here: only the thread count is under test")

    monkeypatch.setattr(litert, "Interpreter", Recorder)
    from restorekit.core import threads as thread_plan

    monkeypatch.setattr(thread_plan, "available_cores", lambda: 6)
    for threads in (None, 3):
        with pytest.raises(BadInputError, match="stop here"):
            tflite.TFLiteSession("m.tflite", TensorContract(name="x"), TensorContract(name="y"), threads=threads)
    assert asked == [6, 3]
