"""Small file helpers shared by every stage: checksums and atomic writes (torch-free)."""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable


def read_user_text(path: str | os.PathLike, what: str) -> str:
    """A user's text file (policy, recipe, JSON result) as UTF-8; bytes that are not UTF-8 are a
    BadInputError naming ``what`` and the offset, not a UnicodeDecodeError."""
    from restorekit.core.errors import BadInputError

    data = Path(path).read_bytes()
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise BadInputError(f"{what} {path} is not UTF-8 text (byte {exc.start})") from None


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
    usual mode (0666 less the umask); on any error the temporary file is removed. The temporary
    file is hidden and carries the writer's pid: one left by a killed process is removed by
    :func:`remove_abandoned_temps`."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=TEMP_SUFFIX, dir=str(path.parent))
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


TEMP_SUFFIX = ".tmp"
#: An atomic write's temporary file: ``.<name>.<pid>.<random>.tmp``.
_TEMP_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)\.[A-Za-z0-9_]+\.tmp$")


def process_alive(pid: int) -> bool:
    """Whether a process with this pid exists (this one counts; another user's process too)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_abandoned_temps(folder: str | os.PathLike) -> list[str]:
    """Remove the temporary files of atomic writes in ``folder`` whose writer process is gone (it
    was killed mid-write); those of a live writer stay. Returns the names removed."""
    removed = []
    folder = Path(folder)
    if not folder.is_dir():
        return removed
    for entry in folder.iterdir():
        m = _TEMP_NAME.match(entry.name)
        if m and entry.is_file() and not entry.is_symlink() and not process_alive(int(m["pid"])):
            entry.unlink(missing_ok=True)
            removed.append(entry.name)
    return removed


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
