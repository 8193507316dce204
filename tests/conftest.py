"""Shared fixtures. Reference data lives in ../shared (never committed); tests that need it skip
with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLES = ROOT / "sample_images"
REALESR = SHARED / "weights" / "realesr-animevideov3.pth"


def pytest_configure(config):
    """Under pytest-xdist, one compute thread per worker: the workers already fill the cores, and
    threads of several workers competing for them cost more than they give. Every run gets an
    empty model cache (RESTOREKIT_CACHE), so a developer's fetched models never change what a
    test sees (``restore`` uses a fetched face detector by default)."""
    import os
    import tempfile

    os.environ["RESTOREKIT_CACHE"] = tempfile.mkdtemp(prefix="restorekit-test-cache-")

    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        try:
            import torch
        except ImportError:
            return
        torch.set_num_threads(1)


def need_shared(path: Path = SHARED) -> Path:
    """Skip the calling test when a ../shared file is not on this machine."""
    if not path.exists():
        pytest.skip(f"reference data not present: {path} (../shared is provided on CI and developer machines)")
    return path


def _main_job(out: Path, *args: str) -> Path:
    """`restorekit bundle --out OUT ARGS` on the built-in model, through the CLI as a user runs it."""
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    res = CliRunner().invoke(app, ["bundle", "--out", str(out), *args])
    assert res.exit_code == 0, res.output
    return out / "restorekit-x2"


#: Directories that ``built_once`` built outside this worker's temp base (checked at the end too).
_BUILT_FOR_ALL_WORKERS: list[Path] = []


def built_once(tmp_path_factory, name: str, build) -> Path:
    """``build(directory)`` run once per test session, also when pytest-xdist splits the session
    into workers: the first worker to ask builds under a lock in the session's shared temp
    directory, the others wait for it and reuse the result."""
    import os

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return build(tmp_path_factory.mktemp(name))
    from filelock import FileLock

    root = tmp_path_factory.getbasetemp().parent  # shared by the workers of this session
    done = root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.exists():
            result = build(root / name)
            _BUILT_FOR_ALL_WORKERS.append(root / name)
            done.write_text(str(result))
        return Path(done.read_text())


@pytest.fixture(scope="session")
def builtin_bundles(tmp_path_factory) -> Path:
    """The main job, run once: `restorekit bundle --out DIR` on the built-in model (all 8 bundles)."""
    return built_once(tmp_path_factory, "bundles", _main_job)


@pytest.fixture(scope="session")
def edge_bundles(request, tmp_path_factory) -> Path:
    """The built-in model's onnx and tflite bundles at fp32 and int8 (``<dir>/onnx-int8`` ...).

    A session that runs the slow tests shares the main job's output (built once for all); the quick
    loop (``-m "not slow"``) builds only these four bundles, with the same command restricted to them."""
    if "not slow" in (request.config.getoption("markexpr") or ""):
        return built_once(tmp_path_factory, "edge-bundles",
                          lambda out: _main_job(out, "--targets", "onnx,tflite", "--precisions", "fp32,int8"))
    return request.getfixturevalue("builtin_bundles")


#: Session fixtures that build the built-in model's bundles (the one expensive build of a run).
BUNDLE_FIXTURES = {"edge_bundles", "builtin_bundles"}


def pytest_collection_modifyitems(config, items):
    """Start the bundle build first and run its other users last: the first test file that needs the
    bundles goes to the front, the remaining ones to the end, so that while one worker builds, the
    others run everything that does not need them (``--dist loadfile`` hands out files in this order)."""
    def uses_bundles(item) -> bool:
        return bool(BUNDLE_FIXTURES & set(getattr(item, "fixturenames", ())))

    files = list(dict.fromkeys(item.nodeid.split("::")[0] for item in items))
    users = [f for f in files if any(uses_bundles(i) for i in items if i.nodeid.startswith(f + "::"))]
    if not users:
        return
    rank = {f: (0 if f == users[0] else 2 if f in users else 1, n) for n, f in enumerate(files)}
    items.sort(key=lambda item: rank[item.nodeid.split("::")[0]])


@pytest.fixture
def rgb_photo() -> np.ndarray:
    """A real photo (astronaut, public domain) as HxWx3 float32."""
    from restorekit.core.image import read_image

    return read_image(SAMPLES / "astronaut.png").rgb


# --- Every manifest.json the suite writes is validated against the bundle JSON Schema ----------------
# (docs/bundle-format.md). At the end of the session every manifest.json under the session's temp
# base (tmp_path, tmp_path_factory.mktemp: where the fixtures and tests write bundles) is checked;
# one that does not validate fails the session with the list of problems. A test that breaks a
# manifest on purpose (to test a refusal) marks its folder with ``mark_invalid_on_purpose``.
# Needs pytest's default tmp_path_retention_policy ("all"): "failed"/"none" delete passed tests' folders.

#: A file of this name in a manifest's folder, or in a folder above it inside the temp base, exempts
#: the manifests below it from the check (a dot-name: ``file_entries`` never lists it).
INVALID_ON_PURPOSE = ".manifest-invalid-on-purpose"


def mark_invalid_on_purpose(folder: Path) -> Path:
    """Exempt the manifests under ``folder`` from the end-of-session schema check; returns ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / INVALID_ON_PURPOSE).write_text("manifests below here are broken on purpose by a test\n")
    return folder


def invalid_manifests(base: Path) -> list[str]:
    """One line per problem of every manifest.json under ``base`` not marked invalid on purpose."""
    import json
    import os

    from restorekit.bundle.manifest import MANIFEST_NAME, validate_manifest

    base = Path(base)
    problems: list[str] = []
    for folder, dirs, files in os.walk(base):  # does not follow symlinks
        dirs.sort()
        here = Path(folder)
        if (here / INVALID_ON_PURPOSE).exists():
            dirs[:] = []  # the marker covers everything below
            continue
        if MANIFEST_NAME not in files:
            continue
        path = here / MANIFEST_NAME
        where = path.relative_to(base).as_posix()
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            problems.append(f"{where}: not JSON ({exc})")
            continue
        problems += [f"{where}: {p}" for p in validate_manifest(data)]
    return problems


@pytest.fixture(scope="session", autouse=True)
def _manifests_written_validate(tmp_path_factory):
    """At the end of the session, fail if any manifest.json the suite wrote breaks the schema."""
    base = tmp_path_factory.getbasetemp()
    yield
    problems = invalid_manifests(base) + [p for d in _BUILT_FOR_ALL_WORKERS for p in invalid_manifests(d)]
    if problems:
        pytest.fail(f"{len(problems)} problem(s) in manifests written by this session (schema: "
                    "restorekit/bundle/manifest.schema.json; base " + str(base) + "):\n" + "\n".join(problems),
                    pytrace=False)
