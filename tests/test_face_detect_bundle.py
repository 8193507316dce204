"""RetinaFace as a "detect" bundle: the loader recognises it, ONNX (dynamic) and TFLite (fixed
640x640, padded) bundles find the same faces as PyTorch, and `restore --reference` reports the
face-detection stage against its reference."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from restorekit.cli.main import app  # noqa: E402
from tests.conftest import SAMPLES, SHARED, need_shared  # noqa: E402

pytestmark = pytest.mark.slow  # full-size acceptance: RetinaFace detector bundles validated on whole photos

WEIGHTS = SHARED / "weights" / "retinaface_mobilenet0.25.pth"
WHOLE = SHARED / "photos" / "whole"
runner = CliRunner()


@pytest.fixture(scope="module")
def detect_bundles(tmp_path_factory):
    """fp32 ONNX and TFLite bundles of the real RetinaFace weights, validated on real group photos."""
    from restorekit.build.bundles import build_bundles

    need_shared(WEIGHTS)
    out = tmp_path_factory.mktemp("detect")
    results = build_bundles(str(WEIGHTS), out, targets=["onnx", "tflite"], precisions=["fp32"],
                            eval_dir=WHOLE, eval_count=3, latency_runs=2)
    return {f"{r.target}-{r.precision}": r for r in results}


def test_loader_recognises_retinaface():
    from restorekit.models.loader import load_model

    spec = load_model(need_shared(WEIGHTS)).spec
    assert (spec.task, spec.architecture, spec.scale, spec.out_channels) == ("detect", "RetinaFace-MobileNet0.25", 1, 16)
    assert 0.40e6 < spec.params < 0.45e6  # 0.43 M (shared/README.md)


def test_detector_bundles_match_pytorch(detect_bundles):
    onnx, tfl = detect_bundles["onnx-fp32"], detect_bundles["tflite-fp32"]
    for r in (onnx, tfl):
        m = r.manifest
        assert r.passed, r.detail
        assert m.task == "detect" and m.output.layout == "NPC" and m.output.value_range is None
        assert m.metrics["faces_reference"] >= 3 and m.metrics["max_abs_err"] <= 1e-3  # real faces were compared
        assert m.metrics["mean_box_iou"] >= 0.99
    assert onnx.manifest.input.shape[2] is None  # dynamic: photos are detected at their own size
    assert tfl.manifest.input.shape[1:3] == [640, 640]  # static: photos are fitted and padded
    report = json.loads((onnx.path.parent / "report.json").read_text())
    assert {b["bundle"] for b in report["bundles"]} == {"onnx-fp32", "tflite-fp32"}


def test_bundle_finds_the_same_four_faces(detect_bundles):
    from restorekit.models.reference import TorchSession
    from restorekit.models.retinaface import load_retinaface
    from restorekit.runtime import load_bundle
    from restorekit.runtime.detect import detect_faces
    from restorekit.core.image import read_image

    rgb = read_image(WHOLE / "cf_00.jpg").rgb
    ref = detect_faces(TorchSession(load_retinaface(WEIGHTS)), rgb)
    got = detect_faces(load_bundle(detect_bundles["onnx-fp32"].path).session, rgb)
    assert len(ref) == len(got) == 4
    for a, b in zip(sorted(ref, key=lambda f: f.box[0]), sorted(got, key=lambda f: f.box[0])):
        assert np.abs(a.box - b.box).max() < 0.05 and np.abs(a.landmarks - b.landmarks).max() < 0.05


def test_restore_reference_reports_face_detection(tmp_path, detect_bundles):
    out, log = tmp_path / "o.png", tmp_path / "o.json"
    res = runner.invoke(app, ["restore", str(WHOLE / "cf_00.jpg"), "-o", str(out), "--stages", "faces,restore",
                              "--face-detector", str(detect_bundles["onnx-fp32"].path), "--reference",
                              "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    v = st["face-detect"]["vs_reference"]
    assert "onnx-fp32" in st["face-detect"]["backend"] and "PyTorch" in v["backend"]
    assert v["faces_reference"] == v["faces_bundle"] == v["matched"] == 4 and v["mean_box_iou"] > 0.999
    assert v["edge_seconds"] > 0 and v["reference_seconds"] > 0
    assert st["faces"]["found"]["count"] == 4
    assert "face-detect" in res.output and "faces 4/4 matched" in res.output


def test_detector_bundles_for_core_ml(tmp_path):
    """Core ML takes detect models: a fixed-size program with the raw [1, priors, 16] output,
    checked structurally off macOS."""
    from restorekit.bundle.manifest import read_manifest

    res = runner.invoke(app, ["bundle", str(need_shared(WEIGHTS)), "--targets", "coreml", "--precisions", "fp32",
                              "--out", str(tmp_path / "b"), "--eval-images", str(SAMPLES)])
    assert res.exit_code == 0, res.output
    m = read_manifest(tmp_path / "b" / WEIGHTS.stem / "coreml-fp32")
    assert m.task == "detect" and m.output.layout == "NPC" and m.input.shape == [1, 3, 640, 640]
    assert m.metrics["structure_ok"] is True


def test_faces_restored_by_the_face_model_given(tmp_path, detect_bundles, edge_bundles):
    """--face-model: aligned faces go to that bundle (here a TFLite one: fixed 256x256 input at x2)."""
    log = tmp_path / "f.json"
    res = runner.invoke(app, ["restore", str(WHOLE / "cf_03.jpg"), "-o", str(tmp_path / "f.png"), "--stages", "faces",
                              "--face-detector", str(detect_bundles["onnx-fp32"].path),
                              "--face-model", str(edge_bundles / "tflite-fp32"), "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["faces"]["ran"] and "faces restored by restorekit-x2 tflite-fp32" in st["faces"]["backend"]
    assert st["faces"]["found"]["enhanced"] >= 1 and not st["restore"]["ran"]
