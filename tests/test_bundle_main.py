"""The main job: `restorekit bundle` on the built-in model, its manifests, fidelity and outputs.

The tests of all eight bundles are the main job's full-size acceptance (``slow``); the others use
the onnx / tflite fp32 and int8 bundles (``edge_bundles``), which the quick loop builds alone."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.bundle.manifest import read_manifest
from restorekit.cli.main import app
from restorekit.core.files import sha256_file
from restorekit.core.image import read_image, write_image
from restorekit.core.metrics import psnr
from restorekit.core.targets import MODEL_FILES

EXPECTED = {"onnx-fp32", "onnx-fp16", "onnx-int8", "tflite-fp32", "tflite-fp16", "tflite-int8",
            "coreml-fp32", "coreml-fp16"}
CONTRACT_KEYS = {"schema_version", "name", "task", "scale", "target", "precision", "input", "output", "tiling",
                 "files", "source", "metrics", "toolkit_version", "created_at"}


@pytest.mark.slow
def test_eight_bundles_with_valid_manifests(builtin_bundles):
    names = {p.name for p in builtin_bundles.iterdir() if p.is_dir()}
    assert names == EXPECTED  # and no temporary directory left behind
    for name in EXPECTED:
        d = builtin_bundles / name
        raw = json.loads((d / "manifest.json").read_text())
        assert CONTRACT_KEYS <= set(raw)
        m = read_manifest(d)  # verifies every checksum
        assert (d / MODEL_FILES[m.target]).exists()
        for f in m.files:
            assert sha256_file(d / f["path"]) == f["sha256"]
        assert m.scale == 2 and m.task == "restore" and m.source["params"] > 50_000
        assert m.tiling["tile"] == 256 and m.tiling["overlap"] > 0
        for key in ("fidelity_psnr_db", "fidelity_ssim", "max_abs_err", "nonfinite", "latency_ms_p50",
                    "latency_ms_p95", "reference_latency_ms_p50", "device", "validated", "not_validated_reason"):
            assert key in m.metrics, (name, key)


@pytest.mark.slow
def test_fidelity_bars(builtin_bundles):
    metrics = {n: read_manifest(builtin_bundles / n).metrics for n in EXPECTED}
    for n in ("onnx-fp32", "tflite-fp32"):
        assert metrics[n]["validated"] and metrics[n]["fidelity_psnr_db"] >= 60.0, metrics[n]
    assert metrics["onnx-int8"]["fidelity_psnr_db"] >= 38.0
    for n in EXPECTED - {"coreml-fp32", "coreml-fp16"}:
        assert metrics[n]["nonfinite"] == 0 and metrics[n]["latency_ms_p50"] > 0


def test_tflite_int8_is_full_integer(edge_bundles):
    m = read_manifest(edge_bundles / "tflite-int8")
    assert m.input.dtype == "int8" and m.input.quant and m.input.layout == "NHWC"
    # Pure white must be representable: calibration covers the full [0, 1] range.
    q = m.input.quant
    assert (127 - q["zero_point"]) * q["scale"] >= 0.99
    # the output too: its clamp to [0, 1] sets its grid (1/255), not the averaged calibration
    q = m.output.quant
    assert (127 - q["zero_point"]) * q["scale"] == pytest.approx(1.0, abs=1e-6) and q["scale"] == pytest.approx(1 / 255)


def test_int8_fine_tuning_is_skipped_where_plain_int8_meets_the_bar(edge_bundles):
    """The default ``--int8-finetune auto``: the built-in model simulates above 45 dB plain, so no
    training runs, and the manifest says so with the simulated figure."""
    for name in ("onnx-int8", "tflite-int8"):
        prep = read_manifest(edge_bundles / name).recipe["float_preparation"]
        assert prep["simulated_ptq_psnr_db"] >= 45.0
        assert prep["finetune"].startswith("not needed")
        assert "fine-tuning" not in prep["how"]


@pytest.mark.slow
def test_coreml_checked_structurally_off_macos(builtin_bundles):
    import platform

    for n in ("coreml-fp32", "coreml-fp16"):
        m = read_manifest(builtin_bundles / n).metrics
        if platform.system() != "Darwin":
            assert m["validated"] is False and "macOS" in m["not_validated_reason"]
            assert m["structure_ok"] is True
            assert all(line.startswith("✓") for line in m["structure_checks"])
    assert read_manifest(builtin_bundles / "coreml-fp16").metrics["simulated_fp16_psnr_db"] > 45


@pytest.mark.slow
def test_reports_written(builtin_bundles):
    rep = json.loads((builtin_bundles / "report.json").read_text())
    assert {b["bundle"] for b in rep["bundles"]} == EXPECTED
    html = (builtin_bundles / "report.html").read_text()
    assert html.count("data:image/png;base64,") >= 4 * 6  # crops for each numerically validated bundle
    assert "<table>" in html


def test_run_rgba_1000x800_tiled_without_seams(edge_bundles, tmp_path):
    import cv2

    from tests.conftest import SAMPLES

    rgb = cv2.resize(read_image(SAMPLES / "coffee.png").rgb, (1000, 800), interpolation=cv2.INTER_CUBIC)
    alpha = np.tile(np.linspace(0.2, 1.0, 1000, dtype=np.float32), (800, 1))
    inp = tmp_path / "rgba.png"
    write_image(inp, np.clip(rgb, 0, 1), alpha)
    runner = CliRunner()
    b = str(edge_bundles / "onnx-fp32")
    res = runner.invoke(app, ["run", b, str(inp), "-o", str(tmp_path / "tiled.png"), "--tile", "256", "--overlap", "32"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["run", b, str(inp), "-o", str(tmp_path / "whole.png"), "--tile", "0"])
    assert res.exit_code == 0, res.output
    tiled, whole = read_image(tmp_path / "tiled.png"), read_image(tmp_path / "whole.png")
    assert tiled.size == (1600, 2000) and tiled.alpha is not None
    assert abs(float(tiled.alpha[:, 0].mean()) - 0.2) < 0.01 and abs(float(tiled.alpha[:, -1].mean()) - 1.0) < 0.01
    assert psnr(tiled.rgb, whole.rgb) >= 60.0


def test_eval_gate(edge_bundles, tmp_path):
    from tests.conftest import SAMPLES

    runner = CliRunner()
    b = str(edge_bundles / "onnx-int8")
    ok = runner.invoke(app, ["eval", b, "--images", str(SAMPLES), "--count", "2", "--min-psnr", "38",
                             "--json", str(tmp_path / "e.json")])
    assert ok.exit_code == 0, ok.output
    data = json.loads((tmp_path / "e.json").read_text())
    assert data["summary"]["psnr_db_mean"] >= 38 and len(data["per_image"]) == 2
    bad = runner.invoke(app, ["eval", b, "--images", str(SAMPLES), "--count", "2", "--min-psnr", "99"])
    assert bad.exit_code == 1 and "3 gate failure(s)" in bad.output  # both images and the mean


@pytest.mark.slow  # acceptance on the black-and-white photos of ../shared
def test_int8_onnx_fidelity_on_photos_it_was_not_calibrated_on(edge_bundles):
    from tests.conftest import SHARED, need_shared

    bw = need_shared(SHARED / "photos" / "bw")
    res = CliRunner().invoke(app, ["eval", str(edge_bundles / "onnx-int8"), "--images", str(bw), "--count", "3",
                                   "--min-psnr", "38"])
    assert res.exit_code == 0, res.output


@pytest.mark.slow
def test_bundles_are_readable_by_others(builtin_bundles):
    """Bundles are copied to devices and served from shared folders: not owner-only (the temp
    directory and files they are built in are 0700/0600)."""
    import stat

    from restorekit.core.files import current_umask

    want_dir, want_file = 0o777 & ~current_umask(), 0o666 & ~current_umask()
    for name in EXPECTED:
        d = builtin_bundles / name
        assert stat.S_IMODE(d.stat().st_mode) == want_dir, name
        assert stat.S_IMODE((d / "manifest.json").stat().st_mode) == want_file, name
    assert stat.S_IMODE((builtin_bundles / "report.html").stat().st_mode) == want_file
