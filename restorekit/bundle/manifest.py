"""The bundle manifest (``manifest.json``): reading, writing and checksum verification.

Torch-free: the runtime on an edge box reads manifests with only numpy installed.
"""

from __future__ import annotations

import datetime as _dt
import functools
import json
import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restorekit.core.errors import BadInputError, ChecksumError
from restorekit.core.files import atomic_write_text, sha256_file
from restorekit.core.targets import MODEL_FILES

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
#: Directory prefixes of a bundle being built (then the builder's pid) and of one moved aside while
#: being replaced: never loadable; removed by the next build (``build.bundles.remove_abandoned_builds``).
BUILD_TMP_PREFIX, REPLACED_PREFIX = ".tmp-", ".old-"
#: JSON Schema (draft 2020-12) of ``manifest.json``, shipped as package data (docs/bundle-format.md).
SCHEMA_PATH = Path(__file__).with_name("manifest.schema.json")


@dataclass
class TensorContract:
    """How a bundle's input or output tensor is laid out and scaled."""

    name: str
    layout: str = "NCHW"  # NCHW | NHWC for images; NPC (batch, priors, values) for detector outputs
    dtype: str = "float32"  # float32 | float16 | int8 | uint8
    shape: list[int | None] = field(default_factory=lambda: [1, 3, None, None])
    value_range: list[float] | None = field(default_factory=lambda: [0.0, 1.0])  # None: raw values, not pixels
    color_order: str = "RGB"
    quant: dict[str, float] | None = None  # {"scale": s, "zero_point": z} for integer tensors

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TensorContract":
        """A contract from its JSON form (unknown keys are ignored)."""
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class Manifest:
    """Everything a runtime needs to run a bundle and a person needs to trust it."""

    name: str
    task: str
    scale: int
    target: str
    precision: str
    input: TensorContract
    output: TensorContract
    tiling: dict[str, int] = field(default_factory=lambda: {"tile": 256, "overlap": 32, "multiple_of": 1})
    files: list[dict[str, Any]] = field(default_factory=list)
    source: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    recipe: dict[str, Any] | None = None
    schema_version: int = SCHEMA_VERSION
    toolkit_version: str = ""
    created_at: str = ""

    @property
    def model_file(self) -> str:
        """File name of the model inside the bundle directory."""
        return MODEL_FILES[self.target]

    def to_dict(self) -> dict[str, Any]:
        """The manifest as JSON-ready data, in the documented key order."""
        d = asdict(self)
        order = ["schema_version", "name", "task", "scale", "target", "precision", "input", "output",
                 "tiling", "files", "source", "metrics", "recipe", "toolkit_version", "created_at"]
        return {k: d[k] for k in order}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Manifest":
        """A manifest from its JSON form; a missing required field, an unknown target or a value of
        the wrong type or out of range (:func:`check_types`) is refused with one line."""
        missing = [k for k in ("name", "task", "scale", "target", "precision", "input", "output") if k not in d]
        if missing:
            raise BadInputError(f"manifest is missing {', '.join(missing)}")
        if not isinstance(d["target"], str) or d["target"] not in MODEL_FILES:
            raise BadInputError(f"manifest names an unknown target {d['target']!r}")
        check_types(d)
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["input"] = TensorContract.from_dict(d["input"])
        kw["output"] = TensorContract.from_dict(d["output"])
        return cls(**kw)


@functools.lru_cache(maxsize=1)
def _schema() -> dict[str, Any]:
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def _enum(where: str) -> list[str]:
    """An enum of the JSON Schema (``"task"``, ``"tensor.layout"``): the lists are declared there once."""
    schema = _schema()
    node = schema["$defs"]["tensor"]["properties"] if where.startswith("tensor.") else schema["properties"]
    return node[where.split(".")[-1]]["enum"]


def check_types(d: dict[str, Any]) -> None:
    """Refuse, in one line, a manifest field of the wrong type or out of range, without ``jsonschema``
    (the runtime has only numpy): what would otherwise be a traceback deep in a backend, or a silently
    wrong image (an overlap of -10 gave NaN seams, a value_range of [0, 0] a white image)."""
    def bad(field: str, want: str) -> BadInputError:
        return BadInputError(f"manifest field {field} must be {want}, got {_short(_get(d, field))}")

    for key in ("name", "task", "target", "precision"):
        if not isinstance(d.get(key), str) or not d[key]:
            raise bad(key, "a non-empty string")
    for key in ("task", "precision"):
        if d[key] not in _enum(key):
            raise bad(key, "one of " + ", ".join(_enum(key)))
    if not _is_int(d.get("scale"), 1):
        raise bad("scale", "an integer >= 1")
    for side in ("input", "output"):
        t = d.get(side)
        if not isinstance(t, dict):
            raise bad(side, "an object")
        if not isinstance(t.get("name"), str) or not t["name"]:
            raise bad(f"{side}.name", "a non-empty string")
        for key in ("layout", "dtype", "color_order"):
            if key in t and t[key] not in _enum(f"tensor.{key}"):
                raise bad(f"{side}.{key}", "one of " + ", ".join(_enum(f"tensor.{key}")))
        shape = t.get("shape", [1, 3, None, None])
        rank = 3 if t.get("layout") == "NPC" else 4
        if not isinstance(shape, list) or len(shape) != rank or not all(v is None or _is_int(v, 1) for v in shape):
            raise bad(f"{side}.shape", f"a list of {rank} positive integers or nulls")
        vr = t.get("value_range", [0.0, 1.0])
        if vr is not None and not (isinstance(vr, list) and len(vr) == 2 and all(_is_number(v) for v in vr)
                                   and vr[0] < vr[1]):
            raise bad(f"{side}.value_range", "null or [lo, hi] with finite lo < hi")
        quant = t.get("quant")
        integer = t.get("dtype", "float32") in ("int8", "uint8", "int16")
        if integer and not (isinstance(quant, dict) and _is_number(quant.get("scale")) and quant["scale"] > 0
                            and _is_int(quant.get("zero_point"), None)):
            raise bad(f"{side}.quant", f"{{scale > 0, zero_point}} for a {t.get('dtype')} tensor")
    tiling = d.get("tiling", {"tile": 256, "overlap": 32, "multiple_of": 1})
    if not isinstance(tiling, dict):
        raise bad("tiling", "an object")
    tile, overlap, mult = tiling.get("tile"), tiling.get("overlap", 32), tiling.get("multiple_of", 1)
    if tile is not None and not _is_int(tile, 1):
        raise bad("tiling.tile", "null or an integer >= 1")
    if not _is_int(overlap, 0) or (tile is not None and overlap >= tile):
        raise bad("tiling.overlap", f"an integer with 0 <= overlap < tile ({tile})")
    if not _is_int(mult, 1):
        raise bad("tiling.multiple_of", "an integer >= 1")
    for key in ("files",):
        if key in d and not isinstance(d[key], list):
            raise bad(key, "a list")
    for key in ("source", "metrics"):
        if key in d and not isinstance(d[key], dict):
            raise bad(key, "an object")
    if d.get("recipe") is not None and not isinstance(d["recipe"], dict):
        raise bad("recipe", "an object or null")


def _get(d: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        d = d.get(part) if isinstance(d, dict) else None
    return d


def _is_int(value: Any, minimum: int | None) -> bool:
    """An int (not a bool) at least ``minimum`` (None: any)."""
    return isinstance(value, int) and not isinstance(value, bool) and (minimum is None or value >= minimum)


def _is_number(value: Any) -> bool:
    """A finite int or float (not a bool)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def file_entries(bundle_dir: Path) -> list[dict[str, Any]]:
    """``files`` entries (path, sha256, bytes) for every file in the bundle except the manifest.

    A ``.mlpackage`` is a directory: each file inside it is listed on its own (hidden ones too: the
    backend reads the whole package). Hidden files beside the model (``.DS_Store``) are not listed.
    """
    entries = []
    for p in sorted(bundle_dir.rglob("*")):
        rel = p.relative_to(bundle_dir).as_posix()
        if p.is_file() and rel != MANIFEST_NAME and not ("/" not in rel and p.name.startswith(".")):
            entries.append({"path": rel, "sha256": sha256_file(p), "bytes": p.stat().st_size})
    return entries


def write_manifest(bundle_dir: Path, manifest: Manifest) -> Path:
    """Fill in files/version/date and write ``manifest.json`` atomically."""
    from restorekit import __version__

    manifest.files = file_entries(bundle_dir)
    manifest.toolkit_version = __version__
    manifest.created_at = manifest.created_at or _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    path = bundle_dir / MANIFEST_NAME
    atomic_write_text(path, json.dumps(manifest.to_dict(), indent=2, ensure_ascii=False) + "\n")
    return path


def read_manifest(bundle_dir: str | os.PathLike, verify: bool = True) -> Manifest:
    """Load a bundle's manifest; with ``verify`` check every listed file's size and sha256."""
    bundle_dir = Path(bundle_dir)
    if bundle_dir.is_file() and bundle_dir.name == MANIFEST_NAME:
        bundle_dir = bundle_dir.parent
    path = bundle_dir / MANIFEST_NAME
    if not bundle_dir.exists():
        raise BadInputError(f"bundle not found: {bundle_dir}")
    if not path.is_file():
        raise BadInputError(f"not a bundle (no {MANIFEST_NAME}): {bundle_dir}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadInputError(f"corrupt manifest {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"corrupt manifest {path}: expected a JSON object, got {type(data).__name__}")
    check_schema_version(data.get("schema_version", SCHEMA_VERSION), path)
    manifest = Manifest.from_dict(data)
    if verify:
        verify_files(bundle_dir, manifest)
    return manifest


def check_schema_version(version: Any, path: str | os.PathLike) -> None:
    """Refuse (one line, naming ``path``) a schema_version that is not an integer this reader knows."""
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise BadInputError(f"unreadable manifest {path}: schema_version must be a positive integer, "
                            f"got {_short(version)} (this restorekit reads schema_version {SCHEMA_VERSION})")
    if version > SCHEMA_VERSION:
        raise BadInputError(f"bundle manifest {path} has schema_version {version}, newer than this restorekit reads "
                            f"(schema_version {SCHEMA_VERSION}): upgrade restorekit to run it")


def _short(value: Any, limit: int = 60) -> str:
    """``repr(value)`` on one line, cut to ``limit`` characters."""
    text = repr(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def validate_manifest(data: dict[str, Any]) -> list[str]:
    """Problems (one line each, empty when valid) of a manifest dict against the JSON Schema.

    Needs ``jsonschema`` (in the ``all`` extra); reading bundles (:func:`read_manifest`) does not.
    """
    from restorekit.core.errors import require

    jsonschema = require("jsonschema")
    schema = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    validator = jsonschema.Draft202012Validator(schema)
    problems = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.absolute_path]):
        where = "/".join(str(p) for p in error.absolute_path) or "(top level)"
        message = " ".join(error.message.split())
        if len(message) > 200:
            message = message[:197] + "..."
        problems.append(f"{where}: {message}")
    return problems


def verify_files(bundle_dir: Path, manifest: Manifest) -> None:
    """Refuse a bundle that could make a backend open anything its manifest does not vouch for:
    ChecksumError naming the first listed file whose size or sha256 differs, a model file (or a file
    inside a ``.mlpackage``) that is not listed, or any other unlisted file; BadInputError for a
    symlink anywhere in the bundle or a listed path that leaves it. Hidden files outside the model
    (``.DS_Store``) are ignored: no backend opens them."""
    if not isinstance(manifest.files, list) or not manifest.files:
        raise ChecksumError(f"manifest of {bundle_dir} lists no files")
    root = bundle_dir.resolve()
    listed: set[str] = set()
    for entry in manifest.files:
        rel = entry.get("path") if isinstance(entry, dict) else None
        if not isinstance(rel, str) or not isinstance(entry.get("sha256"), str) or not _is_int(entry.get("bytes"), 0):
            raise BadInputError(f"manifest of {bundle_dir}: each files entry needs a path, a sha256 and a byte count, "
                                f"got {_short(entry)}")
        if (bundle_dir / rel).is_symlink():
            raise BadInputError(f"bundle {bundle_dir} contains a symlink ({rel}): a bundle holds its files itself")
        p = (bundle_dir / rel).resolve()
        if root not in p.parents:
            raise BadInputError(f"manifest path escapes the bundle: {rel}")
        listed.add(p.relative_to(root).as_posix())
    model = manifest.model_file
    for dirpath, dirnames, filenames in os.walk(root):  # never follows links
        here = Path(dirpath)
        for name in dirnames + filenames:
            path = here / name
            rel = path.relative_to(root).as_posix()
            if path.is_symlink():
                raise BadInputError(f"bundle {bundle_dir} contains a symlink ({rel}): a bundle holds its files itself")
            if name not in filenames or rel == MANIFEST_NAME or rel in listed:
                continue
            if rel == model or rel.startswith(model + "/"):
                raise ChecksumError(f"{rel} in {bundle_dir} is not listed in the manifest: the model is not the "
                                    "one the manifest vouches for")
            if here != root or not name.startswith("."):
                raise ChecksumError(f"unlisted file {rel} in {bundle_dir}: a bundle holds only the files its "
                                    "manifest lists")
    if not (model in listed or any(f.startswith(model + "/") for f in listed)):
        raise ChecksumError(f"the manifest of {bundle_dir} does not list its model file {model}")
    for entry in manifest.files:
        p = bundle_dir / entry["path"]
        if not p.is_file():
            raise ChecksumError(f"bundle file missing: {entry['path']} in {bundle_dir}")
        if p.stat().st_size != entry["bytes"] or sha256_file(p) != entry["sha256"]:
            raise ChecksumError(f"checksum mismatch for {entry['path']} in {bundle_dir}: the file was modified or corrupted")


