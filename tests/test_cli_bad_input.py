"""Every bad input gives exit code 2, one line on stderr, and no partial output."""

from __future__ import annotations

import pickle
import subprocess
import sys
import warnings

import pytest
import torch
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.image import write_image
from tests.conftest import SAMPLES

runner = CliRunner()


def _fails_cleanly(args, *, match: str, out_dir=None):
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert match in err, err
    if out_dir is not None:
        leftovers = [p for p in out_dir.rglob("*")]
        assert leftovers == [], leftovers
    return err


@pytest.mark.parametrize("cmd", ["bundle", "convert", "quantize", "run", "eval", "bench", "train", "inspect", "restore",
                                 "assess", "degrade", "zoo", "distill"])
def test_every_command_has_help(cmd):
    res = runner.invoke(app, [cmd, "--help"])
    assert res.exit_code == 0 and "Usage" in res.output


def test_missing_model(tmp_path):
    _fails_cleanly(["bundle", str(tmp_path / "nope.pth"), "--out", str(tmp_path / "o")], match="model not found")


def test_not_a_model_file(tmp_path):
    f = tmp_path / "notes.pth"
    f.write_text("hello")
    _fails_cleanly(["inspect", str(f)], match="not a loadable weights file")
    text = tmp_path / "text.pth"
    text.write_text("not a checkpoint")  # torch refuses it with advice to retry weights_only=False
    err = _fails_cleanly(["inspect", str(text)], match="not a loadable weights file")
    assert "Unsupported operand" in err and "weights_only` set to `False`" not in err, err  # the reason, not the advice
    g = tmp_path / "photo.jpg"
    g.write_bytes(b"\xff\xd8")
    _fails_cleanly(["inspect", str(g)], match="not a model checkpoint")


class _Exploit:
    def __reduce__(self):
        import os

        return (os.system, ("touch EXPLOITED_MARKER",))


def test_malicious_pickle_is_refused_and_not_executed(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    f = tmp_path / "evil.pth"
    f.write_bytes(pickle.dumps({"weight": _Exploit()}))
    with warnings.catch_warnings(record=True) as seen:  # outside pytest a warning would be a 2nd stderr line
        warnings.simplefilter("always")
        _fails_cleanly(["inspect", str(f)], match="weights_only")
    assert not [w for w in seen if "pickle protocol" in str(w.message)], [str(w.message) for w in seen]
    assert not (tmp_path / "EXPLOITED_MARKER").exists()


def test_unknown_architecture(tmp_path):
    f = tmp_path / "mystery.pth"
    torch.save({"encoder.alpha.weight": torch.zeros(3, 3), "decoder.beta.bias": torch.zeros(3)}, f)
    err = _fails_cleanly(["bundle", str(f), "--out", str(tmp_path / "o")], match="unsupported architecture")
    assert "encoder.alpha.weight" in err
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").rglob("*"))


def test_bad_target_and_precision(tmp_path):
    _fails_cleanly(["bundle", "--targets", "tensorflow", "--out", str(tmp_path / "o")], match="unknown target")
    _fails_cleanly(["convert", "--target", "coreml", "--precision", "int8", "--out", str(tmp_path / "o")],
                   match="coreml does not support precision")


def test_calibration_folder_without_images(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails_cleanly(["quantize", "--target", "onnx", "--scheme", "w8a8", "--calib", str(empty), "--out",
                    str(tmp_path / "o")], match="no readable images")


def test_run_bad_inputs(edge_bundles, tmp_path, rgb_photo):
    b = str(edge_bundles / "onnx-fp32")
    good = tmp_path / "in.png"
    write_image(good, rgb_photo[:32, :32])
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 definitely not a jpeg")
    outdir = tmp_path / "out"
    outdir.mkdir()
    _fails_cleanly(["run", b, str(tmp_path / "missing.png"), "-o", str(outdir / "a.png")], match="image not found",
                   out_dir=outdir)
    _fails_cleanly(["run", b, str(corrupt), "-o", str(outdir / "a.png")], match="cannot decode", out_dir=outdir)
    _fails_cleanly(["run", b, str(good), "-o", str(tmp_path / "nodir" / "a.png")], match="does not exist")
    _fails_cleanly(["run", str(tmp_path), str(good), "-o", str(outdir / "a.png")], match="not a bundle", out_dir=outdir)
    # tiles 1 pixel apart: each pixel through ~1024 tiles (57 s on a 200x150 photo), refused before any work
    _fails_cleanly(["run", b, str(good), "-o", str(outdir / "a.png"), "--tile", "32", "--overlap", "31"],
                   match="more than half the tile (32): each pixel would run through about 1024 tiles", out_dir=outdir)
    # without --tile, a dynamic-size model's planned tile counts: twice the manifest's 256
    _fails_cleanly(["run", str(edge_bundles / "tflite-fp32"), str(good), "-o", str(outdir / "a.png"), "--overlap", "300"],
                   match="more than half the tile (512)", out_dir=outdir)


def test_tampered_bundle_is_rejected(edge_bundles, tmp_path, rgb_photo):
    import shutil

    for name in ("onnx-fp32", "tflite-int8"):
        bad = tmp_path / name
        shutil.copytree(edge_bundles / name, bad)
        model = next(p for p in bad.iterdir() if p.name.startswith("model."))
        data = bytearray(model.read_bytes())
        data[len(data) // 2] ^= 0xFF
        model.write_bytes(bytes(data))
        good = tmp_path / "in.png"
        write_image(good, rgb_photo[:16, :16])
        _fails_cleanly(["run", str(bad), str(good), "-o", str(tmp_path / f"{name}.png")], match="checksum mismatch")
        assert not (tmp_path / f"{name}.png").exists()


def _swap_model_and_relist(bundle, keep: list[str]) -> None:
    """Rewrite the manifest's ``files`` to list only ``keep`` (with their true checksums): what a
    stranger who swapped the model would do so that every listed file still verifies."""
    import json

    from restorekit.core.files import sha256_file

    man = json.loads((bundle / "manifest.json").read_text())
    man["files"] = [{"path": k, "sha256": sha256_file(bundle / k), "bytes": (bundle / k).stat().st_size} for k in keep]
    (bundle / "manifest.json").write_text(json.dumps(man))


@pytest.mark.parametrize("case", ["unlisted model", "symlinked model", "unlisted extra", "symlinked extra"])
def test_a_bundle_cannot_make_a_backend_open_what_its_manifest_does_not_vouch_for(edge_bundles, tmp_path, rgb_photo,
                                                                                 case):
    """The model swapped for another network with only a decoy file listed, or the model (or any
    file) a symlink to somewhere outside the bundle: refused before the backend opens anything,
    through run, restore --bundle and eval."""
    import shutil

    bad = tmp_path / "b"
    shutil.copytree(edge_bundles / "onnx-fp32", bad)
    outside = tmp_path / "elsewhere.onnx"
    shutil.copy(bad / "model.onnx", outside)
    if case == "unlisted model":
        (bad / "LICENSE").write_text("decoy")
        _swap_model_and_relist(bad, ["LICENSE"])
        match = "model.onnx"
    elif case == "symlinked model":
        (bad / "model.onnx").unlink()
        (bad / "model.onnx").symlink_to(outside)
        match = "symlink"
    elif case == "unlisted extra":
        (bad / "notes.onnx").write_bytes(b"x")
        match = "unlisted file notes.onnx"
    else:
        (bad / "extra").symlink_to(outside)
        match = "symlink"
    photo = tmp_path / "in.png"
    write_image(photo, rgb_photo[:16, :16])
    _fails_cleanly(["run", str(bad), str(photo), "-o", str(tmp_path / "o.png")], match=match)
    _fails_cleanly(["restore", str(photo), "-o", str(tmp_path / "r.png"), "--bundle", str(bad), "--stages", "restore"],
                   match=match)
    _fails_cleanly(["eval", str(bad), "--images", str(SAMPLES)], match=match)
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "r.png").exists()


def test_a_hidden_file_beside_the_model_is_ignored(edge_bundles, tmp_path):
    import shutil

    from restorekit.bundle.manifest import read_manifest

    ok = tmp_path / "b"
    shutil.copytree(edge_bundles / "onnx-fp32", ok)
    (ok / ".DS_Store").write_bytes(b"finder")
    assert read_manifest(ok).target == "onnx"


def test_a_bundle_that_failed_its_gates_runs_only_when_asked(edge_bundles, tmp_path, rgb_photo):
    import json
    import shutil

    failed = tmp_path / "onnx-fp32"
    shutil.copytree(edge_bundles / "onnx-fp32", failed)
    man = json.loads((failed / "manifest.json").read_text())
    assert man["metrics"]["gates_passed"] is True  # the build records it
    man["metrics"]["gates_passed"] = False
    (failed / "manifest.json").write_text(json.dumps(man))
    photo = tmp_path / "in.png"
    write_image(photo, rgb_photo[:16, :16])
    _fails_cleanly(["run", str(failed), str(photo), "-o", str(tmp_path / "o.png")], match="--allow-unvalidated")
    _fails_cleanly(["restore", str(photo), "-o", str(tmp_path / "r.png"), "--bundle", str(failed),
                    "--stages", "restore"], match="failed its quality gates")
    res = runner.invoke(app, ["run", str(failed), str(photo), "-o", str(tmp_path / "o.png"), "--allow-unvalidated"])
    assert res.exit_code == 0 and (tmp_path / "o.png").is_file(), res.output


def test_a_failed_rebuild_never_replaces_a_bundle_that_passed(tmp_path, monkeypatch):
    from restorekit.build import bundles
    from restorekit.core.files import sha256_file

    args = dict(targets=["onnx"], precisions=["fp32"], eval_dir=SAMPLES, tile=32, eval_count=1, latency_runs=1)
    (good,) = bundles.build_bundles("default", tmp_path, **args)
    assert good.passed
    before = sha256_file(good.path / "manifest.json")
    # a build killed midway leaves its temporary bundle, checksummed and all: never loadable, removed next time
    import shutil

    from restorekit.core.errors import BadInputError
    from restorekit.runtime import load_bundle

    abandoned = good.path.parent / f"{bundles.TMP_PREFIX}999999999-onnx-fp32-x1y2"
    shutil.copytree(good.path, abandoned)
    with pytest.raises(BadInputError, match="unfinished or replaced build"):
        load_bundle(abandoned)
    monkeypatch.setattr(bundles, "_validate", lambda *a, **k: (False, "✗ planted failure", {}))
    (bad,) = bundles.build_bundles("default", tmp_path, **args)
    assert not bad.passed and "kept" in bad.detail
    assert sha256_file(good.path / "manifest.json") == before  # the good bundle is still there, untouched
    assert [p.name for p in good.path.parent.iterdir() if p.name.startswith(".")] == []  # no leftovers


def test_user_text_is_printed_as_it_is_not_as_markup(tmp_path):
    """`photo [fixme].png` was reported as `photo .png`, and `[/x]` crashed rich while printing."""
    for name in ("photo [fixme].png", "odd [/x].png"):
        err = _fails_cleanly(["run", str(tmp_path), str(tmp_path / name), "-o", str(tmp_path / "o.png")],
                             match=name)
        _fails_cleanly(["assess", str(tmp_path / name)], match=name)
    assert "[" in err


def test_an_os_error_is_one_line_and_exit_2_and_a_traceback_with_restorekit_debug(tmp_path, monkeypatch, rgb_photo):
    """The last resort: what the user's machine causes (a full disk, here) is one line, exit 2;
    RESTOREKIT_DEBUG=1 shows the traceback; a bug (any other exception) keeps its traceback."""
    import errno

    from restorekit.cli import common

    photo = tmp_path / "in.png"
    write_image(photo, rgb_photo[:16, :16])

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "o.png"))

    monkeypatch.setattr("restorekit.core.image.write_image", full)
    args = ["degrade", str(photo), "-o", str(tmp_path / "o.png")]
    err = _fails_cleanly(args, match="No space left on device")
    assert "RESTOREKIT_DEBUG=1" in err
    monkeypatch.setenv("RESTOREKIT_DEBUG", "1")
    res = runner.invoke(app, args)
    assert res.exit_code != 0 and isinstance(res.exception, OSError)
    monkeypatch.delenv("RESTOREKIT_DEBUG")
    wrapped = common.user_errors(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        wrapped()


@pytest.mark.parametrize("args, words", [
    (["bundle", "--targets", ",", "--out", "{t}/o"], "--targets is empty"),
    (["restore", "{photo}", "-o", "{t}/r.png", "--stages", " , "], "--stages is empty"),
    (["degrade", "{photo}", "-o", "{t}/d.png", "--seed", "-1"], "--seed"),
    (["degrade", "{photo}", "-o", "{t}/d.png", "--mode", "pair", "--scale", "1000"], "--scale"),
    (["run", "{t}", "{photo}", "-o", "{t}/o.png", "--threads", "100000"], "--threads"),
    (["run", "{t}", "{photo}", "-o", "{t}"], "unsupported output format"),
    (["degrade", "{photo}", "-o", "{photo}"], "is the input photo"),
    (["restore", "{t}", "-o", "{t}"], "is the input folder"),
    (["restore", "{photo}", "-o", "{t}/dir.png"], "output path is a directory"),
])
def test_options_are_checked_before_any_work(tmp_path, rgb_photo, args, words):
    """An empty list must not mean "all"; out-of-range numbers, an output that is a directory or the
    input itself: one line, exit 2, nothing written, the input untouched."""
    photo = tmp_path / "in.png"
    write_image(photo, rgb_photo[:16, :16])
    (tmp_path / "dir.png").mkdir()
    before = photo.read_bytes()
    res = runner.invoke(app, [a.format(t=tmp_path, photo=photo) for a in args])
    assert res.exit_code == 2, res.output
    assert words in res.output + res.stderr
    assert photo.read_bytes() == before and sorted(p.name for p in tmp_path.iterdir()) == ["dir.png", "in.png"]


def test_a_one_pixel_photo_is_refused_by_degrade_and_assessed_into_strict_json(tmp_path):
    """`degrade --mode second-order` on a 1x1 photo was an OpenCV assertion; `assess --json` wrote NaN
    (invalid JSON)."""
    import json
    import math

    import numpy as np

    one = tmp_path / "one.png"
    write_image(one, np.full((1, 1, 3), 0.5, np.float32))
    _fails_cleanly(["degrade", str(one), "-o", str(tmp_path / "d.png"), "--mode", "second-order"],
                   match="needs at least 32x32")
    res = runner.invoke(app, ["assess", str(one), "--json", str(tmp_path / "a.json")])
    assert res.exit_code == 0, res.output
    text = (tmp_path / "a.json").read_text()
    row = json.loads(text, parse_constant=lambda c: pytest.fail(f"non-standard JSON constant {c}"))["images"][0]
    assert all(not isinstance(v, float) or math.isfinite(v) for v in row.values())


@pytest.mark.parametrize("edit, words", [
    ({"dtype": "int8", "quant": {"scale": 0.0039, "zero_point": 0}}, "the model file has float32"),
    ({"layout": "NHWC", "shape": [1, None, None, 3]}, "NHWC with 3 channels"),
])
def test_a_manifest_contract_the_model_contradicts_is_refused(edge_bundles, tmp_path, rgb_photo, edit, words):
    """int8 or NHWC declared on an NCHW float model: a traceback or a wrong image before."""
    import json
    import shutil

    bad = tmp_path / "b"
    shutil.copytree(edge_bundles / "onnx-fp32", bad)
    man = json.loads((bad / "manifest.json").read_text())
    man["input"].update(edit)
    (bad / "manifest.json").write_text(json.dumps(man))
    photo = tmp_path / "in.png"
    write_image(photo, rgb_photo[:16, :16])
    _fails_cleanly(["run", str(bad), str(photo), "-o", str(tmp_path / "o.png")], match=words)


def test_console_script_exit_code_and_single_line(tmp_path):
    res = subprocess.run([sys.executable, "-m", "restorekit.cli.main", "inspect", str(tmp_path / "x.pth")],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0 and "model not found" in res.stderr
