"""`restorekit bundle MODEL.pth` on a real user checkpoint (Real-ESRGAN Compact from ../shared)."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from restorekit.bundle.manifest import read_manifest
from restorekit.cli.main import app
from tests.conftest import REALESR, need_shared

pytestmark = pytest.mark.slow  # full-size acceptance: Real-ESRGAN Compact from ../shared through bundle, eval and convert


def test_inspect_realesr():
    need_shared(REALESR)
    res = CliRunner().invoke(app, ["inspect", str(REALESR)])
    assert res.exit_code == 0, res.output
    assert "RealESRGAN Compact" in res.output and "621,424" in res.output


def test_bundle_realesr_onnx_tflite_fp32(tmp_path):
    need_shared(REALESR)
    res = CliRunner().invoke(app, ["bundle", str(REALESR), "--targets", "onnx,tflite", "--precisions", "fp32",
                                   "--tile", "64", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    for name in ("onnx-fp32", "tflite-fp32"):
        m = read_manifest(tmp_path / "realesr-animevideov3" / name)
        assert m.scale == 4 and m.source["architecture"] == "RealESRGAN Compact"
        assert m.metrics["fidelity_psnr_db"] >= 60.0
        assert m.source["checkpoint_sha256"] == "4e1e09ba96d08bd4b8455e8897c3242a3501e3766f359941ea894122e158a932"
    # eval finds the reference on its own: the manifest records where the checkpoint was
    assert m.source["checkpoint"] == str(REALESR.resolve())
    res = CliRunner().invoke(app, ["eval", str(tmp_path / "realesr-animevideov3" / "onnx-fp32"), "--images",
                                   str(REALESR.parents[1] / "photos" / "bw"), "--count", "1", "--size", "64",
                                   "--runs", "1", "--min-psnr", "60"])
    assert res.exit_code == 0, res.output


def test_eval_without_a_findable_reference_says_so(tmp_path):
    import json
    import shutil

    need_shared(REALESR)
    copy = tmp_path / "realesr.pth"
    shutil.copy(REALESR, copy)
    res = CliRunner().invoke(app, ["convert", str(copy), "--target", "onnx", "--tile", "64", "--out", str(tmp_path)])
    assert res.exit_code == 0, res.output
    bundle = tmp_path / "realesr" / "onnx-fp32"
    copy.write_bytes(copy.read_bytes()[:-8] + b"changed!")  # the checkpoint changed since
    res = CliRunner().invoke(app, ["eval", str(bundle), "--images", str(REALESR.parents[1] / "photos" / "bw")])
    assert res.exit_code == 2 and "changed since" in res.output and "--reference" in res.output
    assert json.loads((bundle / "manifest.json").read_text())["source"]["checkpoint"] == str(copy.resolve())
