"""Output-sanity gates (restorekit/eval/sanity.py): a bundle whose output is NaN, flat (a solid
colour or black image), noise, or colour-cast fails `restorekit bundle` and `restorekit eval`
without any gate being asked for, naming the image and the check.

The unit tests use synthetic arrays; the end-to-end ones a tiny randomly initialised Compact
(seconds to convert, no ../shared), its fp32 ONNX bundle, and a copy of that bundle whose graph
adds 0.1 to the red channel (a colour cast a converter bug could cause), re-signed.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.eval.fidelity import fidelity_row
from restorekit.eval.sanity import SANITY_BARS, sanity_failures, sanity_summary
from tests.conftest import SAMPLES

runner = CliRunner()
TILE = 64


def _textured(seed: int = 0, shape=(64, 64, 3)) -> np.ndarray:
    """A reference output with texture and colour: smooth gradients plus detail, within [0.1, 0.9]."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0 : shape[0], 0 : shape[1]] / max(shape[:2])
    base = np.stack([xx, yy, (xx + yy) / 2, 1 - xx][: shape[2]], axis=2)
    return np.clip(0.1 + 0.6 * base + 0.2 * rng.random(shape), 0.1, 0.9).astype(np.float32)


def _failures(name: str, out: np.ndarray, ref: np.ndarray) -> list[str]:
    return [f"{image}: {reason}" for image, reason in sanity_failures([fidelity_row(name, out, ref)])]


# --- the check on synthetic arrays -------------------------------------------------------------

def test_reference_itself_passes_and_records_its_values():
    ref = _textured()
    row = fidelity_row("photo1.png", ref.copy(), ref)
    assert row["sanity"] == [] and row["std_ratio"] == pytest.approx(1.0) and row["mean_shift"] == 0.0
    # a correct int8 bundle: 8-bit rounding plus noise of about one step
    rng = np.random.default_rng(1)
    int8 = np.round((ref + rng.normal(0, 1 / 255, ref.shape)) * 255) / 255
    assert _failures("photo1.png", int8.astype(np.float32), ref) == []


def test_constant_output_of_a_textured_reference_is_a_flat_failure_naming_the_image():
    ref = _textured()
    out = np.full_like(ref, float(ref.mean()))  # a solid colour of the right mean: no colour shift
    fails = _failures("photo3.png", out, ref)
    assert any(re.fullmatch(r"photo3\.png: flat output \(std ratio 0 < 0\.5\)", f) for f in fails), fails
    assert fidelity_row("photo3.png", out, ref)["std_ratio"] == 0.0


def test_flat_check_skips_a_flat_reference_and_catches_a_noise_explosion():
    sky = np.full((64, 64, 3), 0.6, np.float32) + np.linspace(0, 0.01, 64, dtype=np.float32)[:, None, None]
    assert _failures("sky.png", np.full_like(sky, 0.605), sky) == []  # the reference is near-flat too
    rng = np.random.default_rng(2)
    noisy = np.clip(sky + rng.normal(0, 0.2, sky.shape), 0, 1).astype(np.float32)
    assert any(f.startswith("sky.png: noise explosion (std ratio") for f in _failures("sky.png", noisy, sky))


def test_red_channel_plus_a_tenth_is_a_colour_shift_failure():
    ref = _textured()
    out = ref + np.array([0.1, 0.0, 0.0], np.float32)
    row = fidelity_row("photo2.png", out, ref)
    assert row["mean_shift"] == pytest.approx(0.1, abs=1e-4)
    fails = _failures("photo2.png", out, ref)
    assert "photo2.png: colour shift (R mean +0.100, bar ±0.03)" in fails, fails
    assert not any("flat" in f or "noise" in f for f in fails)  # texture is intact
    # just inside the bar: passes (the bar, not any change, decides)
    assert not any("colour shift" in f for f in _failures("photo2.png", ref + np.array([0, 0, -0.02], np.float32), ref))


def test_black_output_fails_flat_and_colour_checks():
    ref = _textured()
    fails = _failures("photo4.png", np.zeros_like(ref), ref)
    assert {f.split(" (")[0] for f in fails} >= {"photo4.png: flat output", "photo4.png: colour cast",
                                                  "photo4.png: colour shift"}


def test_nan_output_fails_naming_the_image_and_only_on_nan():
    ref = _textured()
    out = ref.copy()
    out[10:12, 5:7, 1] = np.nan
    assert _failures("photo5.png", out, ref) == ["photo5.png: non-finite output (4 NaN/inf values)"]
    summary = sanity_summary([fidelity_row("photo5.png", out, ref), fidelity_row("ok.png", ref, ref)])
    assert summary["sanity_passed"] is False and summary["sanity_failures"] == [
        "photo5.png: non-finite output (4 NaN/inf values)"]


@pytest.mark.parametrize("channels", [1, 2])
def test_masks_and_two_channel_outputs_get_the_flat_check_but_no_colour_checks(channels):
    ref = _textured(shape=(64, 64, channels))
    row = fidelity_row("mask.png", ref + 0.2, ref)  # a shift a colour check would fail on RGB
    assert row["mean_shift"] is None and row["delta_e00"] is None and row["sanity"] == []
    assert _failures("mask.png", np.full_like(ref, 0.5), ref) == ["mask.png: flat output (std ratio 0 < 0.5)"]


def test_bars_are_declared_once_with_the_documented_values():
    assert dataclasses.asdict(SANITY_BARS) == {"std_floor": 0.02, "min_std_ratio": 0.5, "max_std_ratio": 2.0,
                                               "max_delta_e00": 5.0, "max_mean_shift": 0.03}
    doc = (Path(__file__).resolve().parents[1] / "docs" / "bundle-format.md").read_text()
    assert "sanity_passed" in doc and "0.03" in doc and "ΔE00" in doc


# --- through `restorekit convert` (the bundle command's path) and `restorekit eval` --------------

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny 2x Compact checkpoint and its validated fp32 ONNX bundle (built once for the module)."""
    torch = pytest.importorskip("torch")
    from spandrel.architectures.Compact import Compact

    torch.manual_seed(0)
    net = Compact(num_feat=8, num_conv=3, upscale=2)
    with torch.no_grad():  # a small residual, as a trained restorer's: the output stays in [0, 1]
        net.body[-1].weight.mul_(0.05)
        net.body[-1].bias.zero_()
    d = tmp_path_factory.mktemp("tiny")
    ckpt = d / "tiny-compact-x2.pth"
    torch.save(net.state_dict(), ckpt)
    res = _convert(ckpt, d / "bundles")
    assert res.exit_code == 0, res.output
    return ckpt, d / "bundles" / ckpt.stem / "onnx-fp32"


def _convert(ckpt: Path, out: Path):
    return runner.invoke(app, ["convert", str(ckpt), "--target", "onnx", "--precision", "fp32", "--tile", str(TILE),
                               "--eval-images", str(SAMPLES), "--out", str(out)])


def _eval(bundle: Path, ckpt: Path, *args: str):
    return runner.invoke(app, ["eval", str(bundle), "--images", str(SAMPLES), "--reference", str(ckpt),
                               "--count", "3", "--size", str(TILE), "--runs", "2", *args])


def _red_cast(src: Path, dst: Path, shift: float = 0.1) -> Path:
    """Copy a bundle whose ONNX graph adds ``shift`` to the output's red channel, re-signed."""
    import onnx
    from onnx import helper, numpy_helper

    from restorekit.bundle.manifest import read_manifest, write_manifest

    shutil.copytree(src, dst)
    model = onnx.load(str(dst / "model.onnx"))
    out = model.graph.output[0]
    raw = out.name + "_before_cast"
    for node in model.graph.node:
        node.output[:] = [raw if o == out.name else o for o in node.output]
    model.graph.initializer.append(numpy_helper.from_array(
        np.array([shift, 0.0, 0.0], np.float32).reshape(1, 3, 1, 1), "red_cast"))
    model.graph.node.append(helper.make_node("Add", [raw, "red_cast"], [out.name]))
    onnx.save(model, str(dst / "model.onnx"))
    write_manifest(dst, read_manifest(dst, verify=False))
    return dst


def test_eval_of_a_good_bundle_records_the_sanity_values(tiny, tmp_path):
    ckpt, bundle = tiny
    js = tmp_path / "good.json"
    res = _eval(bundle, ckpt, "--json", str(js))
    assert res.exit_code == 0, res.output
    data = json.loads(js.read_text())
    assert data["summary"]["sanity_passed"] is True and data["summary"]["sanity_failures"] == []
    assert data["gates"]["sanity_bars"] == dataclasses.asdict(SANITY_BARS)
    assert all(r["sanity"] == [] and r["std_ratio"] == pytest.approx(1, abs=1e-3) for r in data["per_image"])
    m = json.loads((bundle / "manifest.json").read_text())["metrics"]  # the build recorded them too
    assert m["sanity_passed"] is True and m["sanity_bars"] == dataclasses.asdict(SANITY_BARS)
    assert m["std_ratio_min"] == pytest.approx(1, abs=1e-3) and m["mean_shift_max"] < 1e-3
    assert all("std_ratio" in r and "sanity" in r for r in m["per_image"])


def test_eval_of_a_colour_cast_bundle_exits_1_naming_each_image(tiny, tmp_path):
    ckpt, bundle = tiny
    cast = _red_cast(bundle, tmp_path / "cast")
    js = tmp_path / "cast.json"
    res = _eval(cast, ckpt, "--json", str(js))  # no gate given: the sanity checks are on by default
    assert res.exit_code == 1, res.output
    names = [r["image"] for r in json.loads(js.read_text())["per_image"]]
    assert len(names) == 3
    for name in names:
        assert re.search(rf"✗ {re.escape(name)}: sanity: colour shift \(R mean \+0\.10\d, bar ±0\.03\)", res.output), \
            res.output
    data = json.loads(js.read_text())
    assert data["gates"]["passed"] is False and data["summary"]["mean_shift_max"] == pytest.approx(0.1, abs=2e-3)


def test_bundle_with_flat_output_fails_the_build_with_exit_1(tiny, tmp_path, monkeypatch):
    """The build's validation runs the bundle as a user would; here its session returns a solid
    grey (what GFPGAN's fp16 TensorRT engine did), so the bundle must fail like a missed bar. The
    fidelity bar is lowered to 0 dB so that only the sanity check can fail it."""
    import restorekit.runtime as runtime
    from restorekit.core.targets import MIN_FIDELITY_DB

    real = runtime.load_bundle
    monkeypatch.setitem(MIN_FIDELITY_DB, "fp32", 0.0)

    class Flat:
        def __init__(self, session):
            self.backend, self.fixed_size, self.device = session.backend, session.fixed_size, session.device
            self.inner = session

        def run(self, x):
            return np.full_like(self.inner.run(x), 0.5)

    def flat_bundle(*args, **kwargs):
        bundle = real(*args, **kwargs)
        return dataclasses.replace(bundle, session=Flat(bundle.session))

    monkeypatch.setattr(runtime, "load_bundle", flat_bundle)
    ckpt, _ = tiny
    res = _convert(ckpt, tmp_path / "flat")
    assert res.exit_code == 1, res.output
    assert re.search(r"onnx-fp32: ✗ PSNR [\d.]+ dB \(bar 0\), .* sanity ✗ \S+: flat output \(std ratio 0 < 0\.5\)",
                     res.output), res.output
    m = json.loads((tmp_path / "flat" / ckpt.stem / "onnx-fp32" / "manifest.json").read_text())["metrics"]
    assert m["sanity_passed"] is False and m["std_ratio_max"] == 0.0
    assert len(m["sanity_failures"]) >= len(m["per_image"])  # every image named
