"""Threads decided in one place: every core this process may use, capped by its cgroup quota."""

from __future__ import annotations

import os

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
