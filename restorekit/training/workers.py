"""Degraded training samples made by worker processes, ahead of the step that needs them.

A sample is a pure function of its seed words (``[seed, step, i]`` for sample ``i`` of step
``step``; the pool's own words for pool samples): :func:`restorekit.training.data.sample_pair`
with ``np.random.default_rng(words)``. So where it is made does not matter: the batches are
bit-identical with 0 workers (this process), 1 or many, and a resumed or ``torchrun`` run sees the
same samples.

Each worker is a spawned process (no fork of a process holding torch's threads) that receives the
training photos once, at start-up, and then only seed words; it imports numpy and OpenCV, not
torch. The training process asks for the samples of the next ``depth`` steps ahead, so the
workers degrade while the model trains.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor

import numpy as np

from restorekit.core.errors import BadInputError

Words = tuple[int, ...]
_WORKER: dict = {}  # inside a worker: the photos and sample settings it was started with


def default_workers(processes: int = 1) -> int:
    """Worker processes of each of ``processes`` training processes when not told: the cores this
    process may use, shared by the training processes, less the one each trains on."""
    from restorekit.core.threads import available_cores

    return max(0, available_cores() // max(1, processes) - 1)


def _start(images: Sequence[np.ndarray], patch_size: int, scale: int, degradation: str) -> None:
    _WORKER.update(images=images, args=(patch_size, scale, degradation))
    import cv2

    cv2.setNumThreads(1)  # a worker is one core's worth of work; OpenCV's own pool would oversubscribe


def _make(words: Words) -> tuple[np.ndarray | bytes, ...]:
    from restorekit.training.data import sample_pair

    return tuple(_packed(a) for a in sample_pair(_WORKER["images"], np.random.default_rng(list(words)),
                                                 *_WORKER["args"]))


def _packed(a: np.ndarray):
    """An array to send back: as 8-bit samples when ``uint8 / 255`` gives back exactly its float32
    values (photos and JPEG-compressed inputs are 8-bit: a quarter of the bytes through the pipe),
    else as it is."""
    u = np.rint(a * np.float32(255.0)).clip(0, 255).astype(np.uint8)
    return u if np.array_equal(_unpacked(u), a) else a


def _unpacked(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) / np.float32(255.0) if a.dtype == np.uint8 else a


class SampleWorkers:
    """Makes (LR, HR) samples by their seed words, on ``workers`` processes (0: in this process)."""

    def __init__(self, images: Sequence[np.ndarray], patch_size: int, scale: int, degradation: str,
                 workers: int | None = None):
        workers = default_workers() if workers is None else int(workers)
        if workers < 0:
            raise BadInputError(f"--workers must be >= 0 (0: make samples in the training process), got {workers}")
        self.workers = workers
        self._args = (list(images), patch_size, scale, degradation)
        self._pending: dict[Words, Future] = {}
        self._pool = None
        if workers:
            self._pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_start, initargs=self._args)

    def ahead(self, words: Sequence[Sequence[int]]) -> None:
        """Start making these samples (no-op without workers, or for ones already under way)."""
        if self._pool is None:
            return
        for w in words:
            key = tuple(int(v) for v in w)
            if key not in self._pending:
                self._pending[key] = self._pool.submit(_make, key)

    def get(self, words: Sequence[Sequence[int]]) -> list[tuple[np.ndarray, np.ndarray]]:
        """The samples of ``words``, in order (made now where no worker made them ahead)."""
        if self._pool is None:
            from restorekit.training.data import sample_pair

            images, *args = self._args
            return [sample_pair(images, np.random.default_rng([int(v) for v in w]), *args) for w in words]
        self.ahead(words)
        return [tuple(_unpacked(a) for a in self._pending.pop(tuple(int(v) for v in w)).result()) for w in words]

    def close(self) -> None:
        """Stop the workers (samples under way are dropped)."""
        if self._pool is not None:
            for fut in self._pending.values():
                fut.cancel()
            self._pending.clear()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
