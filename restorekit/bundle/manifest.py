"""The bundle manifest (``manifest.json``): reading, writing and checksum verification.

Torch-free: the runtime on an edge box reads manifests with only numpy installed.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from restorekit.core.errors import BadInputError, ChecksumError
from restorekit.core.files import atomic_write_text, sha256_file
from restorekit.core.targets import MODEL_FILES

SCHEMA_VERSION = 1
MANIFEST_NAME = "manifest.json"
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
        """A manifest from its JSON form; a missing required field or an unknown target is refused."""
        missing = [k for k in ("name", "task", "scale", "target", "precision", "input", "output") if k not in d]
        if missing:
            raise BadInputError(f"manifest is missing {', '.join(missing)}")
        if d["target"] not in MODEL_FILES:
            raise BadInputError(f"manifest names an unknown target {d['target']!r}")
        kw = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        kw["input"] = TensorContract.from_dict(d["input"])
        kw["output"] = TensorContract.from_dict(d["output"])
        return cls(**kw)


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
        if not isinstance(rel, str) or not isinstance(entry.get("sha256"), str) or not _is_count(entry.get("bytes")):
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


def _is_count(value: Any) -> bool:
    """A non-negative int (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
