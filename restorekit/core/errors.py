"""Errors that the CLI turns into a one-line message and an exit code."""

from __future__ import annotations


class RestorekitError(Exception):
    """Bad usage or bad input: the CLI prints the message and exits with code 2."""

    exit_code = 2


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
