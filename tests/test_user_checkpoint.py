"""`restorekit bundle MODEL.pth` on a real user checkpoint (Real-ESRGAN Compact from ../shared)."""

from __future__ import annotations

from typer.testing import CliRunner

from restorekit.bundle.manifest import read_manifest
from restorekit.cli.main import app
from tests.conftest import REALESR, need_shared


def test_inspect_realesr():
    need_shared(REALESR)
    res = CliRunner().invoke(app, ["inspect", str(REALESR)])
    assert res.exit_code == 0, res.output
    assert "RealESRGAN Compact" in res.output and "621424" in res.output


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
