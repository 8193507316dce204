"""Small file helpers shared by every stage: checksums and atomic writes (torch-free)."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(file)`` on a temporary file in ``path``'s directory, then rename it onto
    ``path``: readers see the old file or the new one, never half of one. The new file gets the
    usual mode (0666 less the umask); on any error the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda fh: fh.write(payload))


def current_umask() -> int:
    """The process umask (read without changing it for long)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """UTF-8 text version of :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def check_writable_path(path: str | os.PathLike) -> Path:
    """A file path whose directory exists (checked before long work starts)."""
    from restorekit.core.errors import BadInputError

    path = Path(path)
    if not path.parent.is_dir():
        raise BadInputError(f"output directory does not exist: {path.parent}")
    if path.is_dir():
        raise BadInputError(f"output path is a directory: {path}")
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise BadInputError(f"cannot write to {path.parent} (permission denied)")
    if path.exists() and not os.access(path, os.W_OK) and not os.access(path.parent, os.W_OK):
        raise BadInputError(f"cannot overwrite {path} (permission denied)")
    return path


def json_text(data, **kwargs) -> str:
    """``data`` as strict JSON text (a trailing newline): NaN and infinities, which ``json.dumps``
    writes as the invalid ``NaN`` / ``Infinity``, become null (a measurement that has no value)."""
    import json
    import math

    def finite(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: finite(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [finite(x) for x in v]
        return v

    return json.dumps(finite(data), allow_nan=False, **kwargs) + "\n"
