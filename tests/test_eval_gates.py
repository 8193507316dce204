"""`restorekit eval`: JSON + self-contained HTML, and gates that catch a broken bundle.

The broken bundles are real ones: the built-in model's fp32 ONNX bundle with one conv's weights
perturbed (a regression a converter or recipe change could cause), or with a NaN planted in a
weight (non-finite output), re-signed so that only the gates, not the checksums, can catch them.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app

SAMPLES = Path(__file__).resolve().parents[1] / "sample_images"
runner = CliRunner()


def _eval(bundle: Path, *args: str):
    return runner.invoke(app, ["eval", str(bundle), "--images", str(SAMPLES), "--count", "3", "--size", "96",
                               "--runs", "2", *args])


def _tampered(src: Path, dst: Path, edit) -> Path:
    """Copy a bundle, change its ONNX weights with ``edit(name, array) -> array``, re-sign it."""
    import onnx
    from onnx import numpy_helper

    from restorekit.bundle.manifest import read_manifest, write_manifest

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    convs = [init for init in model.graph.initializer if numpy_helper.to_array(init).ndim == 4]
    target = convs[len(convs) // 2]  # a conv in the middle of the body
    target.CopyFrom(numpy_helper.from_array(edit(numpy_helper.to_array(target).copy()), target.name))
    onnx.save(model, str(dst / "model.onnx"))
    write_manifest(dst, read_manifest(dst, verify=False))
    return dst


@pytest.fixture(scope="module")
def good_bundle(edge_bundles) -> Path:
    return edge_bundles / "onnx-fp32"


@pytest.fixture(scope="module")
def good_json(good_bundle, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("j") / "good.json"
    res = _eval(good_bundle, "--json", str(path))
    assert res.exit_code == 0, res.output
    return path


def test_json_has_stable_keys_and_per_image_metrics(good_json):
    data = json.loads(good_json.read_text())
    assert data["schema_version"] == 1 and data["kind"] == "restorekit.eval"
    assert {"bundle", "reference", "images", "summary", "per_image", "latency", "quality", "gates"} <= set(data)
    assert len(data["per_image"]) == 3
    row = data["per_image"][0]
    assert set(row) == {"image", "psnr_db", "ssim", "max_abs_err", "delta_e00", "nonfinite", "clipped_new",
                        "std_ratio", "mean_shift", "sanity"}  # the last three: output-sanity checks (eval/sanity.py)
    assert row["sanity"] == [] and data["summary"]["sanity_passed"] is True
    # fp32 ONNX is bit-exact with the PyTorch reference here: capped PSNR, zero colour difference
    assert data["summary"]["psnr_db_min"] >= 60 and data["summary"]["delta_e00_mean"] < 0.01
    assert data["latency"]["bundle_ms_p50"] > 0 and data["latency"]["reference_ms_p50"] > 0


def test_same_bundle_passes_its_own_baseline(good_bundle, good_json):
    res = _eval(good_bundle, "--baseline", str(good_json), "--max-drop", "0.1", "--max-nonfinite", "0")
    assert res.exit_code == 0, res.output
    assert "gates passed" in res.output


def test_perturbed_weights_fail_the_baseline_gate_listing_every_image(good_bundle, good_json, tmp_path):
    rng = np.random.default_rng(0)
    broken = _tampered(good_bundle, tmp_path / "broken", lambda w: w + rng.normal(0, 0.02, w.shape).astype(w.dtype))
    res = _eval(broken, "--baseline", str(good_json), "--max-drop", "0.1")
    assert res.exit_code == 1, res.output
    names = [r["image"] for r in json.loads(good_json.read_text())["per_image"]]
    for name in names:  # every image is listed, not only the first failure
        assert re.search(rf"{re.escape(name)}: PSNR dropped [\d.]+ dB vs baseline", res.output), res.output
    assert "mean PSNR dropped" in res.output
    assert f"{len(names) + 1} gate failure(s)" in res.output


def test_nan_bundle_is_caught_by_max_nonfinite(good_bundle, tmp_path):
    def plant_nan(w):
        w[0, 0, 1, 1] = np.nan
        return w

    broken = _tampered(good_bundle, tmp_path / "nan", plant_nan)
    res = _eval(broken, "--max-nonfinite", "0")
    assert res.exit_code == 1, res.output
    assert "non-finite output values > 0" in res.output
    # without the gate the output-sanity check (always on) still fails it, naming each image
    res = _eval(broken)
    assert res.exit_code == 1, res.output
    assert len(re.findall(r"✗ \S+: sanity: non-finite output \(\d+ NaN/inf values\)", res.output)) == 3, res.output


def test_policy_file_applies_per_bundle_thresholds(good_bundle, tmp_path):
    policy = tmp_path / "gates.yaml"
    policy.write_text('default: {min_psnr: 30}\nbundles:\n  "*-fp32": {min_psnr: 200}\n  "tflite-*": {min_psnr: 999}\n')
    res = _eval(good_bundle, "--policy", str(policy))
    assert res.exit_code == 1 and "< 200 dB" in res.output and "999" not in res.output
    # a command-line gate overrides the policy file
    assert _eval(good_bundle, "--policy", str(policy), "--min-psnr", "60").exit_code == 0
    policy.write_text("bundles:\n  onnx-fp32: {min_psnr: 60, nonsense: 1}\n")
    res = _eval(good_bundle, "--policy", str(policy))
    assert res.exit_code == 2 and "unknown gate(s) nonsense" in res.output


def test_baseline_that_is_not_an_eval_result_is_bad_input(good_bundle, tmp_path):
    bogus = tmp_path / "x.json"
    bogus.write_text('{"hello": 1}')
    res = _eval(good_bundle, "--baseline", str(bogus))
    assert res.exit_code == 2 and "not a `restorekit eval --json` result" in res.output


def test_int8_html_report_is_self_contained(edge_bundles, tmp_path):
    page, js = tmp_path / "report.html", tmp_path / "int8.json"
    res = _eval(edge_bundles / "onnx-int8", "--html", str(page), "--json", str(js), "--clean", "--min-psnr", "38")
    assert res.exit_code == 0, res.output
    text = page.read_text()
    # offline: no external resource of any kind, every image inline
    assert not re.search(r"""(src|href)=['"]?(https?:|//|file:)""", text)
    images = re.findall(r"data:image/png;base64,([A-Za-z0-9+/=]+)", text)
    assert len(images) == 3 * 4 + 2  # 4 crops per image, fidelity and latency plots
    assert all(base64.b64decode(b)[:8] == b"\x89PNG\r\n\x1a\n" for b in images)
    data = json.loads(js.read_text())
    q = data["quality"]["mean"]
    # the int8 bundle keeps the reference's quality against the clean originals within 0.2 dB
    assert abs(q["bundle_psnr_db"] - q["reference_psnr_db"]) < 0.2
    assert data["gates"]["passed"] is True


def test_example_policy_in_docs_parses_to_the_documented_gates():
    from restorekit.eval.gates import Gates, load_policy

    path = Path(__file__).resolve().parents[1] / "docs" / "gates.example.yaml"
    int8 = load_policy(path, ["onnx-int8", "restorekit-x2/onnx-int8"])
    assert int8 == Gates(min_psnr=38, min_ssim=0.99, max_nonfinite=0, max_delta_e=1.0, max_drop=0.1)
    assert load_policy(path, ["tflite-fp32"]).min_psnr == 60


@pytest.mark.parametrize("option, value, words", [("--min-psnr", "nan", "--min-psnr must be a finite number"),
                                                  ("--min-psnr", "inf", "--min-psnr must be a finite number"),
                                                  ("--max-nonfinite", "-1", "--max-nonfinite must be a whole number"),
                                                  ("--max-drop", "-0.5", "--max-drop must be a finite number"),
                                                  ("--min-ssim", "2", "--min-ssim must be a finite number")])
def test_a_threshold_that_would_switch_its_gate_off_is_a_usage_error(good_bundle, option, value, words):
    """NaN compares false with everything: `--min-psnr nan` used to pass any bundle with exit 0."""
    res = _eval(good_bundle, option, value)
    assert res.exit_code == 2 and words in res.stderr and res.stderr.strip().count("\n") == 0, res.output


@pytest.mark.parametrize("text, words", [("default: {min_psnr: .nan}", "gate min_psnr must be a finite number"),
                                         ("default: {max_nonfinite: -1}", "gate max_nonfinite must be a whole number"),
                                         ("bundles: {'*': {max_delta_e: true}}", "must be numbers, not true/false")])
def test_a_policy_threshold_that_would_switch_its_gate_off_is_refused(tmp_path, text, words):
    from restorekit.core.errors import BadInputError
    from restorekit.eval.gates import load_policy

    path = tmp_path / "gates.yaml"
    path.write_text(text + "\n")
    with pytest.raises(BadInputError, match=re.escape(words)):
        load_policy(path, ["onnx-int8"])


def test_a_gate_that_checks_no_image_fails():
    from restorekit.eval.gates import Gates, check

    rows = [{"image": f"{i}.png", "psnr_db": 50.0, "ssim": 1.0, "delta_e00": None, "nonfinite": 0, "clipped_new": 0,
             "std_ratio": 1.0, "mean_shift": 0.0, "sanity": []} for i in range(2)]
    result = {"per_image": rows, "summary": {"psnr_db_mean": 50.0, "ssim_mean": 1.0, "nonfinite": 0, "clipped_new": 0}}
    fails = check(result, Gates(max_delta_e=1.0), sanity=False)
    assert len(fails) == 1 and "no image has a colour difference" in str(fails[0])
    assert check(result, Gates(min_psnr=40), sanity=False) == []
