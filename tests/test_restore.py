"""`restorekit restore`: the staged pipeline on real old photos (../shared) and the samples."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.image import read_image, write_image
from restorekit.restore.pipeline import remove_cast, stretch_tone
from tests.conftest import SAMPLES, SHARED, need_shared

runner = CliRunner()


def _stages(log: dict) -> dict:
    return {s["stage"]: s for s in log["stages"]}


def test_scratched_print_is_repaired_and_logged(tmp_path):
    src = need_shared(SHARED / "photos" / "old_scratched" / "bopb_scratch_b.png")
    out, cmp_, log = tmp_path / "r.png", tmp_path / "c.png", tmp_path / "r.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--compare", str(cmp_), "--json", str(log)])
    assert res.exit_code == 0, res.output
    photo, before = read_image(out), read_image(src)
    assert photo.size == before.size and (photo.alpha is None) == (before.alpha is None)
    assert read_image(cmp_).size[1] > 2 * before.size[1]  # side by side
    st = _stages(json.loads(log.read_text())["photos"][0])
    assert st["assess"]["found"]["tone"] == "sepia"
    assert st["defects"]["ran"] and st["defects"]["found"]["coverage"] > 0.005  # the creases are found
    assert st["restore"]["ran"] and "restorekit-x2" in st["restore"]["backend"]
    assert st["cast"]["ran"] is False and "keeps its tone" in st["cast"]["reason"]
    assert st["faces"]["ran"] is False and st["faces"]["reason"]


def test_bw_photo_colorize_is_reported_skipped_and_stays_gray(tmp_path):
    src = SAMPLES / "camera.png"
    out, log = tmp_path / "bw.png", tmp_path / "bw.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--json", str(log),
                              "--stages", "restore", "--scale", "2"])
    assert res.exit_code == 0, res.output
    photo = read_image(out)
    assert photo.was_gray and photo.size == (1024, 1024)
    st = _stages(json.loads(log.read_text())["photos"][0])
    assert st["colorize"]["ran"] is False and st["defects"]["ran"] is False
    assert "no colorization model (pass --colorize BUNDLE" in st["colorize"]["reason"]


def test_rgba_keeps_alpha(tmp_path, rgb_photo):
    src = tmp_path / "a.png"
    alpha = np.zeros(rgb_photo.shape[:2], np.float32)
    alpha[50:200, 60:300] = 1.0
    write_image(src, rgb_photo, alpha)
    out = tmp_path / "o.png"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "restore"])
    assert res.exit_code == 0, res.output
    back = read_image(out)
    assert back.alpha is not None and back.alpha[100, 100] > 0.99 and back.alpha[10, 10] < 0.01


def test_folder_run_reports_bad_files_and_skips_finished_work(tmp_path, rgb_photo):
    src, dst = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    write_image(src / "good.png", rgb_photo[:96, :128])
    (src / "corrupt.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    os.symlink(tmp_path / "nowhere.png", src / "unreadable.png")  # a dangling link cannot be read
    args = ["restore", str(src), "-o", str(dst), "--stages", "restore,tone"]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert "2 of 3 photos failed" in res.output and "corrupt.jpg" in res.output and "unreadable.png" in res.output
    assert (dst / "good.png").is_file() and not (dst / "corrupt.jpg").exists()
    stamp = (dst / "good.png").stat().st_mtime_ns
    again = runner.invoke(app, args)
    assert again.exit_code == 2 and "skipped 1 already restored: good.png" in again.output
    assert (dst / "good.png").stat().st_mtime_ns == stamp


def test_bad_usage(tmp_path):
    res = runner.invoke(app, ["restore", str(SAMPLES / "coffee.png"), "-o", str(tmp_path / "x.png"), "--stages", "magic"])
    assert res.exit_code == 2 and "unknown stage(s) magic" in res.output
    res = runner.invoke(app, ["restore", str(tmp_path / "missing.png"), "-o", str(tmp_path / "x.png")])
    assert res.exit_code == 2 and "input not found" in res.output
    res = runner.invoke(app, ["restore", str(SAMPLES / "coffee.png"), "-o", str(tmp_path / "x.png"), "--scale", "9"])
    assert res.exit_code == 2 and "--scale must be within 1..8" in res.output
    assert not (tmp_path / "x.png").exists()


def test_tone_stretch_and_cast_removal(rgb_photo):
    from restorekit.restore.assess import assess

    faded = 0.25 + 0.5 * rgb_photo
    stretched, info = stretch_tone(faded)
    assert assess(stretched).tonal_range > assess(faded).tonal_range + 15 and info["gain"] <= 1.6
    cast = np.clip(rgb_photo * np.array([1.0, 0.95, 0.75], np.float32), 0, 1)
    fixed, info = remove_cast(cast)
    assert assess(fixed).cast < 0.6 * assess(cast).cast and np.hypot(info["shift_a"], info["shift_b"]) <= 10.01  # rounded in the log


def test_reference_reports_each_edge_stage_against_pytorch(tmp_path, edge_bundles):
    """int8 restoration bundle vs the built-in PyTorch model, on the same stage input."""
    src = SAMPLES / "coffee.png"
    out, log = tmp_path / "r.png", tmp_path / "r.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--bundle", str(edge_bundles / "onnx-int8"),
                              "--stages", "defects,restore", "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    assert "edge stages vs their full-precision references" in res.output
    st = _stages(json.loads(log.read_text())["photos"][0])
    v = st["restore"]["vs_reference"]
    assert "onnx-int8" in st["restore"]["backend"] and "restorekit-x2" in v["backend"]
    assert 38 < v["psnr_db"] < 100 and v["edge_seconds"] > 0 and v["reference_seconds"] > 0  # int8: close, not exact
    d = st["defects"]["vs_reference"]  # the PyTorch detector is its own reference: identical
    assert d["psnr_db"] >= 100 and d["mask_iou"] == 1.0


def test_failed_start_leaves_no_output_folder(tmp_path):
    res = runner.invoke(app, ["restore", str(SAMPLES), "-o", str(tmp_path / "out"), "--detector", str(tmp_path / "nope")])
    assert res.exit_code == 2 and "model not found" in res.output
    assert not (tmp_path / "out").exists()


def test_sr_stage_upscales_and_is_compared_with_its_reference(tmp_path, edge_bundles):
    """--sr: restoration at the input's size, then the SR bundle upscales; --reference scores it."""
    src = SAMPLES / "coffee.png"
    out, log = tmp_path / "s.png", tmp_path / "s.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "restore,sr", "--scale", "2",
                              "--sr", str(edge_bundles / "onnx-int8"), "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    entry = json.loads(log.read_text())["photos"][0]
    st = _stages(entry)
    assert st["restore"]["settings"]["output"] == "1x" and st["sr"]["ran"]
    v = st["sr"]["vs_reference"]
    assert "onnx-int8" in st["sr"]["backend"] and "restorekit-x2" in v["backend"] and 38 < v["psnr_db"] < 100
    h, w = entry["input_size"]
    assert entry["output_size"] == [2 * h, 2 * w]


def test_scale_beyond_the_models_is_refused(tmp_path):
    res = runner.invoke(app, ["restore", str(SAMPLES / "coffee.png"), "-o", str(tmp_path / "x.png"), "--scale", "4"])
    assert res.exit_code == 2 and "needs an upscaler of at least that scale" in res.output
    assert not (tmp_path / "x.png").exists()


def test_profile_splits_each_stage_into_model_time_and_the_rest(tmp_path):
    src, log = tmp_path / "p.png", tmp_path / "p.json"
    write_image(src, read_image(SAMPLES / "coffee.png").rgb[::3, ::3].copy())
    res = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"), "--profile", "--json", str(log)])
    assert res.exit_code == 0, res.output
    assert "where the time goes" in res.output and "all stages" in res.output
    st = _stages(json.loads(log.read_text())["photos"][0])
    ran = [s for s in st.values() if s["ran"]]
    assert all(0 <= s["model_seconds"] <= s["seconds"] + 1e-3 for s in ran)
    assert st["restore"]["model_seconds"] > 0 and st["defects"]["model_seconds"] > 0  # the restorer, the detector
    assert all(st[n]["model_seconds"] == 0 for n in ("assess", "tone", "cast") if n in st and st[n]["ran"])  # no model


class _Probe:
    """A pipeline stage that records the samples it was given."""

    def __init__(self, name: str, needs: str, seen: dict):
        self.name, self.needs, self.seen = name, needs, seen

    def applies(self, ctx):
        return True

    def run(self, ctx):
        self.seen[self.name] = ctx.rgb.copy()
        return {}


@pytest.mark.parametrize("integer", [True, False])
def test_a_stage_gets_the_samples_it_declares(monkeypatch, integer):
    """uint8 for a stage that declares uint8, float32 for float32, and what comes for "any"; a photo
    read as integer samples is converted only when a stage needs float; the caller's photo is kept."""
    from restorekit.core.image import Photo
    from restorekit.restore import pipeline as P

    seen: dict = {}
    order = [("a", "any"), ("b", "uint8"), ("c", "any"), ("d", "float32"), ("e", "any"), ("f", "uint8")]
    monkeypatch.setattr(P, "PIPELINE", tuple(_Probe(name, needs, seen) for name, needs in order))
    samples = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    rgb = samples if integer else samples.astype(np.float32) / 255
    before = rgb.copy()
    result = P.restore_photo(Photo(rgb=rgb), None, None, P.RestoreOptions(stages=()))
    assert seen["a"].dtype == rgb.dtype  # nothing asked for another type yet
    assert seen["b"].dtype == np.uint8 and np.array_equal(seen["b"], samples)
    assert seen["c"].dtype == np.uint8
    assert seen["d"].dtype == np.float32 and np.allclose(seen["d"], samples / 255, atol=1e-7)
    assert seen["e"].dtype == np.float32
    assert seen["f"].dtype == np.uint8 and np.array_equal(seen["f"], samples)  # float -> uint8 rounds back exactly
    assert np.array_equal(rgb, before)
    if integer:  # the result is in the photo's own samples
        assert result.photo.rgb.dtype == np.uint8 and np.array_equal(result.photo.rgb, samples)
    else:
        assert result.photo.rgb.dtype == np.float32 and np.allclose(result.photo.rgb, samples / 255, atol=1e-7)


def test_an_8bit_photo_stays_8bit_within_rounding_of_the_float_pipeline(tmp_path):
    """A photo read as uint8 stays in integer samples through every stage (16-bit between the
    restorer and the stages that regrade it, tone and cast a band at a time) and ends within one
    8-bit level of the same photo run in float32 (defects, restore, tone and cast all run; the
    caller's photo is left alone)."""
    import cv2

    from restorekit.restore.models import load_pipeline_models
    from restorekit.restore.pipeline import RestoreOptions, restore_photo

    small = cv2.resize(read_image(SAMPLES / "chelsea.png").rgb, (256, 192), interpolation=cv2.INTER_AREA)
    faded = 0.3 + 0.45 * small + np.array([0.0, 0.06, 0.0], np.float32)  # faded, with a green cast
    faded[60:62, 20:200] = 0.95  # a scratch for the detector and Telea
    src = tmp_path / "faded.png"
    write_image(src, faded)
    opts = RestoreOptions(scale=2)
    models = load_pipeline_models(opts)
    as_u8, as_float = read_image(src, integer=True), read_image(src)
    kept = as_u8.rgb.copy()
    results = [restore_photo(p, models.restorer, models.detector, opts) for p in (as_u8, as_float)]
    ran = {s["stage"] for s in results[0].log["stages"] if s["ran"]}
    assert {"defects", "restore", "tone", "cast"} <= ran, ran
    assert np.array_equal(as_u8.rgb, kept)
    eight, flt = results[0].photo.rgb, results[1].photo.rgb
    assert eight.dtype == np.uint8 and flt.dtype == np.float32 and eight.shape == (384, 512, 3)
    diff = np.abs(eight.astype(int) - np.rint(flt * 255).astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.05, (diff.max(), diff.mean())


def test_telea_fills_8bit_samples_exactly_as_the_float_path(rgb_photo):
    """Telea on uint8 samples (no float round trip, RGB order as it comes) fills the same values as
    on the photo in float; only masked pixels change, and in place only when asked."""
    from restorekit.core.image import as_samples
    from restorekit.restore.defects import inpaint

    eight = as_samples(rgb_photo[:128, :160], np.uint8)
    mask = np.zeros(eight.shape[:2], bool)
    mask[40:43, 10:150] = True
    mask[90:100, 70:80] = True
    kept = eight.copy()
    filled = inpaint(eight, mask)
    assert filled.dtype == np.uint8 and np.array_equal(eight, kept)  # a new array unless in place
    from_float = inpaint(eight.astype(np.float32) / 255, mask)
    assert np.array_equal(filled, as_samples(from_float, np.uint8))
    assert np.array_equal(filled[~mask], kept[~mask]) and not np.array_equal(filled[mask], kept[mask])
    assert inpaint(eight, mask, in_place=True) is eight and np.array_equal(eight, filled)
