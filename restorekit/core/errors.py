"""Errors that the CLI turns into a one-line message and an exit code."""

from __future__ import annotations

import re

#: Control characters (newlines, escape sequences) that user text — file names, checkpoint keys,
#: manifest fields — may carry into a message.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def one_line(text: str) -> str:
    """``text`` with every control character written as its escape (``\\n``, ``\\x1b``): one line,
    and nothing a terminal would act on."""
    return _CONTROL.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


class RestorekitError(Exception):
    """Bad usage or bad input: the CLI prints the message (one line) and exits with code 2."""

    exit_code = 2

    def __init__(self, message: str = "", *args):
        super().__init__(one_line(str(message)), *args)


class BadInputError(RestorekitError):
    """An input file (image, model, bundle) is missing, unreadable or not what it claims."""


class ChecksumError(BadInputError):
    """A bundle file's sha256 does not match its manifest."""


class BackendUnavailableError(RestorekitError):
    """An optional backend (onnxruntime, ai-edge-litert, coremltools, torch) is not installed
    or cannot run on this platform."""


def require(module: str, extra: str = "all"):
    """Import an optional dependency or raise a clear BackendUnavailableError."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BackendUnavailableError(
            f"{module} is not installed: pip install 'restorekit[{extra}]' ({exc})"
        ) from exc
