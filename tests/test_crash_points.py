"""Crash points: ``restore DIR`` and ``bundle`` killed with SIGKILL at several points, then the same
command again completes the rest; a full disk (ENOSPC, simulated) gives exit 2, one line, and no
partial file. (``zoo fetch`` killed mid-download: tests/test_zoo.py.)"""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.files import remove_abandoned_temps
from restorekit.core.image import read_image, write_image
from tests.conftest import SAMPLES

runner = CliRunner()
STAGES = ["--stages", "tone,cast"]


def run_until_killed(args: list[str], point, timeout: float = 120.0) -> None:
    """Run ``restorekit ARGS`` in a process and SIGKILL it as soon as ``point()`` is true; fail if it
    ends first (the crash point was never reached)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "restorekit.cli.main", *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while not point():
            if proc.poll() is not None:
                pytest.fail(f"restorekit {' '.join(args)} ended (exit {proc.returncode}) before the crash point: "
                            f"{proc.stderr.read().decode()[-500:]}")
            if time.monotonic() > deadline:
                pytest.fail("crash point not reached in time")
            time.sleep(0.005)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
        proc.stderr.close()


def _visible(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []


@pytest.fixture(scope="module")
def photo_folder(tmp_path_factory) -> Path:
    src = tmp_path_factory.mktemp("scans")
    base = np.tile(read_image(SAMPLES / "astronaut.png").rgb, (1, 2, 1))  # 512x1024
    for k in range(8):
        write_image(src / f"scan_{k}.png", np.roll(base, 37 * k, axis=1))
    return src


def test_restore_dir_killed_at_several_points_then_rerun_completes_the_rest(tmp_path, photo_folder):
    clean = tmp_path / "clean"
    assert runner.invoke(app, ["restore", str(photo_folder), "-o", str(clean), *STAGES]).exit_code == 0
    out = tmp_path / "out"
    for point in (1, 4):  # a crash after the first output, then another after the fourth
        run_until_killed(["restore", str(photo_folder), "-o", str(out), *STAGES],
                         lambda point=point: len(_visible(out)) >= point)
        for p in _visible(out):  # what is there is whole: outputs are renamed into place
            assert read_image(p).size == read_image(clean / p.name).size
    done = [p.name for p in _visible(out)]
    assert 1 <= len(done) < 8
    res = runner.invoke(app, ["restore", str(photo_folder), "-o", str(out), *STAGES])
    assert res.exit_code == 0, res.output
    assert f"skipped {len(done)} already restored" in res.output
    assert [p.name for p in _visible(out)] == [p.name for p in _visible(clean)]
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no half-written leftovers
    for p in _visible(out):
        assert np.array_equal(read_image(p).rgb, read_image(clean / p.name).rgb), p.name


def test_abandoned_temporary_files_are_removed_and_live_ones_kept(tmp_path):
    dead = tmp_path / ".a.png.999999999.x1y2.tmp"  # no such pid
    live = tmp_path / f".b.png.{os.getpid()}.z3w4.tmp"
    other = tmp_path / ".c.png.tmp"  # not an atomic write's temporary file: not ours to remove
    for p in (dead, live, other):
        p.write_bytes(b"half")
    assert remove_abandoned_temps(tmp_path) == [dead.name]
    assert not dead.exists() and live.exists() and other.exists()


def test_a_full_disk_is_one_line_exit_2_and_leaves_no_partial_file(tmp_path, photo_folder, monkeypatch):
    import restorekit.core.files as files

    real_fdopen, written = os.fdopen, []

    class FullDisk:
        """A file that takes 1000 bytes, then reports ENOSPC (the third output only)."""

        def __init__(self, fh):
            self.fh = fh

        def write(self, data):
            self.fh.write(bytes(data)[:1000])
            raise OSError(errno.ENOSPC, "No space left on device")

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            self.fh.close()

    def fdopen(fd, mode="r", *a, **k):
        fh = real_fdopen(fd, mode, *a, **k)
        written.append(fd)
        return FullDisk(fh) if len(written) == 3 else fh

    monkeypatch.setattr(files.os, "fdopen", fdopen)
    out = tmp_path / "out"
    res = runner.invoke(app, ["restore", str(photo_folder), "-o", str(out), *STAGES])
    assert res.exit_code == 2, res.output
    lines = [ln for ln in res.output.splitlines() if "No space left on device" in ln]
    assert len(lines) == 1 and "Traceback" not in res.output + res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["scan_0.png", "scan_1.png"]  # nothing half-written
    monkeypatch.setattr(files.os, "fdopen", real_fdopen)
    res = runner.invoke(app, ["restore", str(photo_folder), "-o", str(out), *STAGES])
    assert res.exit_code == 0 and "skipped 2 already restored" in res.output
    assert len(_visible(out)) == 8


def test_bundle_killed_midway_leaves_no_visible_bundle_and_the_rerun_completes(tmp_path):
    from restorekit.bundle.manifest import read_manifest

    out = tmp_path / "bundles"
    model_dir = out / "restorekit-x2"
    args = ["bundle", "default", "--targets", "onnx", "--precisions", "fp32", "--out", str(out), "--eval-images", str(SAMPLES)]

    def building(name):
        return lambda: any(d.name.startswith(".tmp-") and (d / name).exists()
                           for d in (model_dir.iterdir() if model_dir.exists() else ()))

    run_until_killed(args, building("model.onnx"))  # once the model is exported, before it is validated
    assert [p for p in _visible(model_dir) if p.is_dir()] == []  # no bundle to load: the half-built one is hidden
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert [p.name for p in _visible(model_dir) if p.is_dir()] == ["onnx-fp32"]
    assert read_manifest(model_dir / "onnx-fp32", verify=True).metrics["gates_passed"]
    assert not [p.name for p in model_dir.iterdir() if p.name.startswith(".tmp-")]  # the killed builds' removed
