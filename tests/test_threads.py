"""Threads decided in one place: every core this process may use, capped by its cgroup quota."""

from __future__ import annotations

import os

import numpy as np
import pytest

from restorekit.core import threads


@pytest.mark.parametrize("text, cores", [("150000 100000\n", 1.5), ("max 100000\n", None), ("400000 100000", 4.0),
                                         ("garbage", None), ("", None)])
def test_cgroup_quota_is_read_in_cores(tmp_path, text, cores):
    (tmp_path / "cpu.max").write_text(text)
    assert threads.cgroup_cpu_limit(tmp_path / "cpu.max") == cores


def test_sessions_get_the_cores_this_process_may_use(tmp_path, monkeypatch):
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", tmp_path / "absent")
    assert threads.available_cores() == affinity == threads.session_threads(None)
    (tmp_path / "cpu.max").write_text("50000 100000")  # docker --cpus 0.5: one thread, not the machine's count
    monkeypatch.setattr(threads, "CGROUP_CPU_MAX", tmp_path / "cpu.max")
    assert threads.available_cores() == 1 and threads.session_threads(None) == 1
    assert threads.session_threads(3) == 3  # --threads wins


def test_threads_option_decides_every_thread_count_of_the_process(tmp_path):
    """``--threads`` reaches the work outside the models too (tone and cast bands, assessment, PNG
    deflate), and a command without it gives the cores back."""
    from typer.testing import CliRunner

    from restorekit.cli.main import app
    from restorekit.core.image import write_image

    src = tmp_path / "p.png"
    write_image(src, np.random.default_rng(0).random((48, 64, 3), dtype=np.float32))
    runner = CliRunner()
    try:
        res = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"), "--stages", "tone",
                                  "--threads", "1"])
        assert res.exit_code == 0, res.output
        assert threads.work_threads() == 1 and threads.session_threads(None) == 1 and threads.session_threads(3) == 3
        res = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"), "--stages", "tone",
                                  "--overwrite"])
        assert res.exit_code == 0, res.output
        assert threads.work_threads() == threads.available_cores()
    finally:
        threads.limit_threads(None)
