"""The build pipeline on a tiny PReLU checkpoint (a small Real-ESRGAN Compact, no ../shared):
rebuilding over an existing bundle, and the int8 PReLU path end to end (automatic fine-tuning,
split PReLUs, tied grids) into a validated ONNX bundle."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from restorekit.bundle.manifest import read_manifest  # noqa: E402
from restorekit.quantize.recipe import INT8_FINETUNE  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402


@pytest.fixture(scope="module")
def tiny_compact(tmp_path_factory) -> Path:
    """A randomly initialised 2x Compact (PReLU) with 8 features, saved as a user's .pth. Its last
    conv is scaled down so that, like a trained restorer's, the residual stays small and the output
    stays within [0, 1] (int8 image outputs are quantized within [0, 1])."""
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_feat=8, num_conv=3, upscale=2)
    with torch.no_grad():
        net.body[-1].weight.mul_(0.05)
        net.body[-1].bias.zero_()
    path = tmp_path_factory.mktemp("tiny") / "tiny-compact-x2.pth"
    torch.save(net.state_dict(), path)
    return path


def _build(checkpoint: Path, out: Path, precision: str, **kw):
    from restorekit.build.bundles import build_bundles

    return build_bundles(str(checkpoint), out, targets=["onnx"], precisions=[precision], calib_dir=SAMPLES,
                         eval_dir=SAMPLES, tile=64, eval_count=2, calib_count=4, latency_runs=2, **kw)


def test_rebuilding_replaces_the_old_bundle_whole(tiny_compact, tmp_path):
    first = _build(tiny_compact, tmp_path, "fp32")[0]
    created = read_manifest(first.path).created_at
    (first.path / "stale.txt").write_text("left over from an older build")  # (unlisted: the bundle no longer loads)
    second = _build(tiny_compact, tmp_path, "fp32")[0]
    assert second.path == first.path and second.passed
    assert not (second.path / "stale.txt").exists()  # replaced whole, not merged
    manifest = read_manifest(second.path)  # checksums verify against the new files
    assert {f["path"] for f in manifest.files} == {"model.onnx"}
    assert manifest.created_at >= created
    leftovers = [p.name for p in second.path.parent.iterdir() if p.name.startswith(".")]
    assert leftovers == []  # no temporary or moved-aside directories remain
    report = json.loads((second.path.parent / "report.json").read_text())
    assert [b["bundle"] for b in report["bundles"]] == ["onnx-fp32"]


def test_int8_prelu_path_fine_tunes_automatically_with_split_prelus_and_tied_grids(tiny_compact, tmp_path):
    # ``below_psnr`` above any reachable PSNR makes the automatic decision fine-tune this tiny net
    settings = {**INT8_FINETUNE, "steps": 20, "batch": 2, "crop": 32, "below_psnr": 200.0}
    result = _build(tiny_compact, tmp_path, "int8", int8_finetune=settings, int8_split_prelus=True)[0]
    assert result.passed, result.detail
    recipe = read_manifest(result.path).recipe
    assert recipe["rewrites"]["split_prelu"] >= 1  # every other PReLU split into a ReLU on doubled channels
    prep = recipe["float_preparation"]
    assert prep["simulated_ptq_psnr_db"] < 200.0  # the plain w8a8 simulation ran first and decided
    tuned = prep["finetune"]
    assert isinstance(tuned, dict) and tuned["steps"] == 20
    assert tuned.get("tied_prelu_grids", 0) >= 1  # a conv output and the PReLU after it share one grid
    assert prep["learned_activation_ranges"] > 0


def test_int8_is_not_fine_tuned_when_plain_int8_meets_the_bar(tiny_compact, tmp_path):
    settings = {**INT8_FINETUNE, "steps": 20, "below_psnr": 1.0}
    result = _build(tiny_compact, tmp_path, "int8", int8_finetune=settings)[0]
    prep = read_manifest(result.path).recipe["float_preparation"]
    assert isinstance(prep["finetune"], str) and prep["finetune"].startswith("not needed")


def test_validation_is_sized_to_the_model():
    """A model whose one pass on a tile is heavy (RRDBNet x4plus: ~1.2 TMAC at 256 px) is validated
    on fewer crops and timed runs, with a note; light models keep the requested counts."""
    from rich.console import Console

    from restorekit.build.bundles import HEAVY_EVAL_COUNT, HEAVY_LATENCY_RUNS, validation_budget
    from restorekit.models.spec import ModelSpec

    console = Console(record=True, width=200)
    light = ModelSpec(name="compact", architecture="Compact", task="sr", scale=4, macs_per_megapixel=2.3e9)
    heavy = ModelSpec(name="x4plus", architecture="ESRGAN", task="sr", scale=4, macs_per_megapixel=18e12)
    assert validation_budget(light, 256, 6, 8, console) == (6, 8)
    assert validation_budget(heavy, 256, 6, 8, console) == (HEAVY_EVAL_COUNT, HEAVY_LATENCY_RUNS)
    assert "x4plus: 1180 GMAC per 256x256 pass" in console.export_text()
