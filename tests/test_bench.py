"""`restorekit bench`: percentiles, peak RSS and CPU-peak fraction for bundles and the reference."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.errors import BadInputError
from restorekit.eval import bench as bench_mod
from restorekit.eval.bench import cpu_peak, expand_bundles
from restorekit.eval.bench_worker import MATMUL_ONNX_B64


def test_embedded_peak_model_is_the_matmul_it_claims_to_be():
    from onnx import TensorProto, helper

    io = lambda n, dims: helper.make_tensor_value_info(n, TensorProto.FLOAT, dims)  # noqa: E731
    graph = helper.make_graph([helper.make_node("MatMul", ["a", "b"], ["c"])], "mm",
                              [io("a", ["M", "K"]), io("b", ["K", "N"])], [io("c", ["M", "N"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    assert base64.b64decode(MATMUL_ONNX_B64) == model.SerializeToString()


@pytest.mark.parametrize("flags, vendor, fpc", [
    ({"avx", "avx2", "fma", "avx512f", "avx512_vp2intersect"}, "AuthenticAMD", 64),  # Zen 5
    ({"avx", "avx2", "fma", "avx512f"}, "AuthenticAMD", 32),  # Zen 4: AVX-512 on 256-bit units
    ({"avx", "avx2", "fma", "avx512f"}, "GenuineIntel", 64),
    ({"avx", "avx2", "fma"}, "GenuineIntel", 32),
    ({"fp", "asimd"}, "", 16),  # ARM NEON (Jetson Orin's Cortex-A78AE)
])
def test_theoretical_peak_from_the_vector_isa(monkeypatch, flags, vendor, fpc):
    monkeypatch.setattr(bench_mod, "_cpuinfo", lambda: (flags, vendor, 2000.0))
    peak = cpu_peak()
    assert peak.flops_per_cycle == fpc and peak.ghz == 2.0
    assert peak.gflops(1) == pytest.approx(fpc * 2.0)
    assert f"{fpc} fp32 FLOP/cycle" in peak.how


def test_bundle_arguments_expand_and_bad_ones_are_refused(edge_bundles, tmp_path):
    found = expand_bundles([edge_bundles])
    assert {p.name for p in found} >= {"onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"}
    assert expand_bundles([edge_bundles / "onnx-int8"]) == [edge_bundles / "onnx-int8"]
    with pytest.raises(BadInputError, match="bundle not found"):
        expand_bundles([tmp_path / "nope"])
    with pytest.raises(BadInputError, match="not a bundle"):
        expand_bundles([tmp_path])


def test_bench_fp32_and_int8_onnx_tflite_and_reference_in_one_run(edge_bundles, tmp_path):
    names = ["onnx-fp32", "onnx-int8", "tflite-fp32", "tflite-int8"]
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(app, ["bench", *[str(edge_bundles / n) for n in names], "--runs", "5",
                                   "--warmup", "1", "--threads", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    for col in ("p50 ms", "p95 ms", "p99 ms", "peak RSS MB", "% CPU peak"):
        assert col in res.output
    data = json.loads(out.read_text())
    assert data["kind"] == "restorekit.bench" and data["machine"]["peak_gflops"] > 0
    rows = {r["name"]: r for r in data["results"]}
    assert set(rows) == set(names) | {"pytorch-fp32 (reference)"}
    ref = rows["pytorch-fp32 (reference)"]
    for r in rows.values():
        assert r["runs"] == 5 and 0 < r["p50_ms"] <= r["p95_ms"] <= r["p99_ms"]
        assert r["peak_rss_mb"] > 0 and 0 < r["fraction_of_peak"] and r["gflops"] > 0
    for n in names:  # each bundle ran in its own torch-free process: far less memory than the reference's
        assert rows[n]["peak_rss_mb"] < ref["peak_rss_mb"]
        assert rows[n]["speedup_vs_reference"] == pytest.approx(ref["p50_ms"] / rows[n]["p50_ms"], rel=1e-2)


def test_bad_sizes_are_refused(edge_bundles):
    res = CliRunner().invoke(app, ["bench", str(edge_bundles / "onnx-fp32"), "--sizes", "big"])
    assert res.exit_code == 2 and "bad size" in res.output
