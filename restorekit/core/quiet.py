"""Silence the converters' own chatter (C++ logs, tqdm bars, prints) without losing it on failure."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile


@contextlib.contextmanager
def captured_native_output():
    """Redirect file descriptors 1 and 2 to a temporary file for the duration of the block.

    On an exception the captured text's last lines are attached to it (``exc.converter_log``)
    so nothing needed for debugging is lost.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        except BaseException as exc:
            sys.stdout.flush()
            sys.stderr.flush()
            log.seek(0)
            exc.converter_log = log.read().decode(errors="replace")[-4000:]  # type: ignore[attr-defined]
            raise
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])
