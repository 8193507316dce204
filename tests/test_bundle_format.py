"""The bundle format is a published contract (docs/bundle-format.md): a JSON Schema shipped in the
package, a frozen v1 manifest that must keep loading, newer versions refused in one line."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from restorekit.bundle.manifest import (
    MANIFEST_NAME,
    SCHEMA_PATH,
    SCHEMA_VERSION,
    Manifest,
    TensorContract,
    read_manifest,
    validate_manifest,
)
from restorekit.core.errors import BackendUnavailableError, BadInputError
from tests.conftest import ROOT, invalid_manifests, mark_invalid_on_purpose

FROZEN_V1 = ROOT / "tests" / "fixtures" / "manifest_v1.json"
#: sha256 of the frozen fixture's canonical JSON: the file is a v1 manifest as restorekit 0.1.0
#: wrote it (``restorekit convert --target onnx --precision fp32``), kept verbatim forever. A
#: format change adds a new fixture beside it; this one never changes.
FROZEN_V1_CANONICAL_SHA256 = "b5c2877135de4a4d373a96779ff8f5b1191aa5008b1344f481a21081b9a7774c"


def _frozen() -> dict:
    return json.loads(FROZEN_V1.read_text(encoding="utf-8"))


def _bundle_with(folder: Path, data: dict) -> Path:
    """A bundle folder holding ``data`` as its manifest (and no model file: nothing gets that far)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / MANIFEST_NAME).write_text(json.dumps(data, indent=2), encoding="utf-8")
    return folder


# --- the schema -------------------------------------------------------------------------------------

def test_schema_is_a_valid_draft_2020_12_json_schema():
    jsonschema = pytest.importorskip("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    jsonschema.Draft202012Validator.check_schema(schema)
    assert schema["properties"]["schema_version"] == {**schema["properties"]["schema_version"], "const": SCHEMA_VERSION}


def test_schema_describes_exactly_the_fields_the_writer_writes():
    """Adding a manifest field means adding it to the schema (and to docs/bundle-format.md)."""
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    written = Manifest(name="n", task="sr", scale=2, target="onnx", precision="fp32",
                       input=TensorContract(name="input"), output=TensorContract(name="output")).to_dict()
    assert set(schema["properties"]) == set(written)
    assert set(schema["$defs"]["tensor"]["properties"]) == set(written["input"])
    doc = (ROOT / "docs" / "bundle-format.md").read_text(encoding="utf-8")
    for key in [*written, *written["input"], *written["tiling"]]:
        assert f"`{key}`" in doc, f"docs/bundle-format.md does not document {key}"


def test_schema_ships_as_package_data(tmp_path):
    """importlib.resources finds the schema, and a wheel built from pyproject.toml contains it."""
    import importlib.resources

    res = importlib.resources.files("restorekit.bundle").joinpath("manifest.schema.json")
    assert res.is_file() and json.loads(res.read_text(encoding="utf-8"))["$id"]
    src = tmp_path / "src"
    shutil.copytree(ROOT / "restorekit", src / "restorekit", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (ROOT / name).exists():
            shutil.copy2(ROOT / name, src / name)
    code = "import setuptools.build_meta as b, sys; print(b.build_wheel(sys.argv[1]))"
    res = subprocess.run([sys.executable, "-c", code, str(tmp_path / "dist")], cwd=src, capture_output=True,
                         text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    wheel = tmp_path / "dist" / res.stdout.strip().splitlines()[-1]
    with zipfile.ZipFile(wheel) as z:
        assert "restorekit/bundle/manifest.schema.json" in z.namelist()


# --- the frozen v1 manifest -------------------------------------------------------------------------

def test_frozen_v1_fixture_is_unchanged():
    canonical = json.dumps(_frozen(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == FROZEN_V1_CANONICAL_SHA256, (
        "tests/fixtures/manifest_v1.json is frozen: add a new fixture for a new format instead")


def test_frozen_v1_manifest_keeps_loading(tmp_path):
    data = _frozen()
    assert data["schema_version"] == 1
    m = Manifest.from_dict(data)
    assert (m.name, m.task, m.scale, m.target, m.precision) == ("restorekit-x2", "restore", 2, "onnx", "fp32")
    assert m.model_file == "model.onnx" and m.files[0]["path"] == "model.onnx"
    assert (m.input.layout, m.input.dtype, m.input.shape, m.input.value_range) == ("NCHW", "float32",
                                                                                 [1, 3, None, None], [0.0, 1.0])
    assert m.tiling == {"tile": 256, "overlap": 32, "multiple_of": 1}
    out = m.to_dict()
    assert {k: out[k] for k in data} == data  # nothing is lost or changed on the way through the reader
    back = read_manifest(_bundle_with(tmp_path / "b", data), verify=False)  # the file reader, version check included
    assert back.to_dict() == out


def test_frozen_v1_manifest_validates():
    pytest.importorskip("jsonschema")
    assert validate_manifest(_frozen()) == []


# --- newer or malformed versions are refused in one line -------------------------------------------

@pytest.mark.parametrize("version, words", [(2, "newer"), (SCHEMA_VERSION + 40, "newer"), ("1", "positive integer"),
                                            (1.0, "positive integer"), (True, "positive integer"),
                                            (None, "positive integer"), (0, "positive integer")])
def test_read_manifest_refuses_other_schema_versions(tmp_path, version, words):
    data = {**_frozen(), "schema_version": version}
    folder = _bundle_with(mark_invalid_on_purpose(tmp_path) / "bundle", data)
    with pytest.raises(BadInputError) as info:
        read_manifest(folder, verify=False)
    msg = str(info.value)
    assert "\n" not in msg and words in msg, msg
    assert str(folder / MANIFEST_NAME) in msg and repr(version) in msg, msg  # names the file and its version
    assert f"schema_version {SCHEMA_VERSION}" in msg, msg  # the version this reader reads


def _png(path: Path) -> Path:
    import cv2
    import numpy as np

    assert cv2.imwrite(str(path), np.full((8, 8, 3), 128, np.uint8))
    return path


def test_cli_run_refuses_a_newer_bundle_with_one_line(tmp_path):
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    bundle = _bundle_with(mark_invalid_on_purpose(tmp_path) / "v2", {**_frozen(), "schema_version": 2})
    photo = _png(tmp_path / "in.png")
    res = CliRunner().invoke(app, ["run", str(bundle), str(photo), "-o", str(tmp_path / "out.png")])
    assert res.exit_code == 2, res.output
    err = res.stderr.strip()
    assert err.count("\n") == 0, err
    assert "schema_version 2" in err and f"schema_version {SCHEMA_VERSION}" in err and str(bundle) in err, err
    assert not (tmp_path / "out.png").exists()


def test_console_script_refuses_a_newer_bundle_with_one_line(tmp_path):
    bundle = _bundle_with(mark_invalid_on_purpose(tmp_path) / "v2", {**_frozen(), "schema_version": 2})
    photo = _png(tmp_path / "in.png")
    res = subprocess.run([sys.executable, "-m", "restorekit.cli.main", "run", str(bundle), str(photo), "-o",
                          str(tmp_path / "out.png")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stderr.strip().count("\n") == 0 and "newer than this restorekit reads" in res.stderr, res.stderr


# --- the schema catches broken manifests -----------------------------------------------------------

def _drop(key):
    return lambda d: d.pop(key)


def _set(path: str, value):
    def edit(d):
        *parents, last = path.split(".")
        for p in parents:
            d = d[int(p)] if p.isdigit() else d[p]
        d[int(last) if last.isdigit() else last] = value
    return edit


BROKEN = {
    "missing name": (_drop("name"), "'name' is a required property"),
    "missing files": (_drop("files"), "'files' is a required property"),
    "missing tiling": (_drop("tiling"), "'tiling' is a required property"),
    "short sha256": (_set("files.0.sha256", "ab" * 31), "files/0/sha256"),
    "upper-case sha256": (_set("files.0.sha256", "AB" * 32), "files/0/sha256"),
    "non-hex sha256": (_set("files.0.sha256", "zz" * 32), "files/0/sha256"),
    "negative bytes": (_set("files.0.bytes", -1), "files/0/bytes"),
    "absolute file path": (_set("files.0.path", "/etc/passwd"), "files/0/path"),
    "no files": (_set("files", []), "files"),
    "unknown target": (_set("target", "webgpu"), "target"),
    "unknown task": (_set("task", "denoise"), "task"),
    "unknown precision": (_set("precision", "int4"), "precision"),
    "schema_version 2": (_set("schema_version", 2), "schema_version"),
    "string schema_version": (_set("schema_version", "1"), "schema_version"),
    "bad layout": (_set("input.layout", "CHW"), "input/layout"),
    "bad dtype": (_set("output.dtype", "float64"), "output/dtype"),
    "3-d image shape": (_set("input.shape", [1, 3, None]), "input/shape"),
    "int8 without quant": (_set("input.dtype", "int8"), "input/quant"),
    "float with quant": (_set("output.quant", {"scale": 0.1, "zero_point": 0}), "output/quant"),
    "zero quant scale": (lambda d: d["input"].update(dtype="int8", quant={"scale": 0, "zero_point": -128}),
                         "input/quant"),
    "negative overlap": (_set("tiling.overlap", -1), "tiling/overlap"),
    "string tile": (_set("tiling.tile", "256"), "tiling/tile"),
    "misspelled field": (_set("toolkit_versoin", "0.1.0"), "toolkit_versoin"),
    "validated not boolean": (_set("metrics.validated", "yes"), "metrics/validated"),
    "psnr as text": (_set("metrics.fidelity_psnr_db", "150 dB"), "metrics/fidelity_psnr_db"),
    "recipe scheme unknown": (_set("recipe.scheme", "int3"), "recipe/scheme"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validation_catches_a_broken_manifest(case):
    pytest.importorskip("jsonschema")
    edit, expected = BROKEN[case]
    data = copy.deepcopy(_frozen())
    edit(data)
    problems = validate_manifest(data)
    assert problems, f"{case}: validated"
    assert any(expected in p for p in problems), problems
    assert all("\n" not in p for p in problems), problems


def test_open_sections_take_new_keys():
    """metrics, source and recipe are open: a new measurement is an additive change."""
    pytest.importorskip("jsonschema")
    data = _frozen()
    data["metrics"]["latency_ms_p99"] = 70.0
    data["source"]["licence"] = "Apache-2.0"
    data["recipe"]["notes"] = ["anything"]
    assert validate_manifest(data) == []


# --- reading needs no jsonschema; validating says how to get it -------------------------------------

def test_read_manifest_needs_no_jsonschema(tmp_path, monkeypatch):
    folder = _bundle_with(tmp_path / "b", _frozen())
    monkeypatch.setitem(sys.modules, "jsonschema", None)  # import jsonschema now raises ImportError
    assert read_manifest(folder, verify=False).name == "restorekit-x2"
    with pytest.raises(BackendUnavailableError, match="jsonschema is not installed"):
        validate_manifest(_frozen())
    code = textwrap.dedent("""
        import sys
        import restorekit.bundle.manifest, restorekit.runtime
        assert "jsonschema" not in sys.modules, "the runtime path imported jsonschema"
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr


# --- the suite's own check of every manifest it writes ---------------------------------------------

def test_session_check_finds_broken_manifests_and_skips_marked_ones(tmp_path):
    pytest.importorskip("jsonschema")
    base = mark_invalid_on_purpose(tmp_path) / "base"  # the outer session must not see these either
    _bundle_with(base / "good", _frozen())
    _bundle_with(base / "bad", {k: v for k, v in _frozen().items() if k != "name"})
    _bundle_with(mark_invalid_on_purpose(base / "refusal") / "v2", {**_frozen(), "schema_version": 2})
    (base / "junk").mkdir()
    (base / "junk" / MANIFEST_NAME).write_text("{not json")
    problems = invalid_manifests(base)
    assert len(problems) == 2, problems
    assert problems[0].startswith("bad/manifest.json: ") and "'name' is a required property" in problems[0]
    assert problems[1].startswith("junk/manifest.json: not JSON")


def test_session_fails_when_a_test_writes_an_invalid_manifest(tmp_path):
    """The conftest fixture turns an invalid manifest into a failed session (exit code 1)."""
    pytest.importorskip("jsonschema")
    outer = mark_invalid_on_purpose(tmp_path)
    inner = outer / "inner"
    inner.mkdir()
    (inner / "conftest.py").write_text("from tests.conftest import _manifests_written_validate  # noqa: F401\n")
    (inner / "test_writes.py").write_text(textwrap.dedent(f"""
        import json

        def test_writes_a_manifest_without_files(tmp_path):
            data = json.loads(open({str(FROZEN_V1)!r}, encoding="utf-8").read())
            del data["files"]
            (tmp_path / "manifest.json").write_text(json.dumps(data))
    """))
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-c", os.devnull,
                          "--rootdir", str(inner), "--basetemp", str(outer / "base"), str(inner)],
                         cwd=inner, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    out = res.stdout + res.stderr
    assert res.returncode == 1, out
    assert "1 passed" in out and "1 error" in out, out
    assert "'files' is a required property" in out and "test_writes_a_manifest_withou" in out, out


# --- wrong types and values are refused at read time, in one line, without jsonschema --------------

def _edited(path: str, value):
    data = copy.deepcopy(_frozen())
    *parents, last = path.split(".")
    node = data
    for p in parents:
        node = node[p]
    node[last] = value
    return data


@pytest.mark.parametrize("path, value, words", [
    ("scale", "2", "scale must be an integer >= 1"),
    ("scale", 0, "scale must be an integer >= 1"),
    ("task", "upscale", "task must be one of"),
    ("input", "NCHW", "input must be an object"),
    ("input.layout", "NWHC", "input.layout must be one of"),
    ("input.dtype", "int8", "input.quant must be {scale > 0, zero_point}"),
    ("input.shape", [1, 3, "H", None], "input.shape must be a list of 4"),
    ("output.value_range", [0, 0], "output.value_range must be null or [lo, hi]"),
    ("output.value_range", "0-1", "output.value_range must be null or [lo, hi]"),
    ("output.value_range", [0, float("nan")], "output.value_range must be null or [lo, hi]"),
    ("tiling.overlap", -10, "tiling.overlap must be an integer with 0 <= overlap < tile"),
    ("tiling.overlap", 256, "tiling.overlap must be an integer with 0 <= overlap < tile"),
    ("tiling.tile", "256", "tiling.tile must be null or an integer"),
    ("tiling.multiple_of", 0, "tiling.multiple_of must be an integer >= 1"),
    ("files", "model.onnx", "files must be a list"),
    ("metrics", [], "metrics must be an object"),
])
def test_read_manifest_refuses_wrong_types_and_values_in_one_line(tmp_path, path, value, words):
    """These used to be tracebacks deep in a backend or silently wrong images (an overlap of -10 gave
    NaN seams, a value_range of [0, 0] an almost white image)."""
    folder = _bundle_with(mark_invalid_on_purpose(tmp_path / "b"), _edited(path, value))
    with pytest.raises(BadInputError, match=re.escape(words)) as err:
        read_manifest(folder, verify=False)
    assert "\n" not in str(err.value)
