"""What every CLI module shares: the consoles, the one-line-error wrapper, the options several
command groups take, and the small parsers of option values."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from restorekit.core.errors import RestorekitError

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default. No markup in
# what is printed: file names and manifest fields are the user's text ("photo [x].png"); styles are
# given as rich Text.
out_console = Console(width=None if sys.stdout.isatty() else 160, markup=False)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, markup=False)

ModelArg = Annotated[Optional[str], typer.Argument(help="Checkpoint (.pth/.pt/.ckpt/.safetensors), a zoo name (restorekit zoo list) or 'default' (the built-in model).")]
BundleArg = Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory (with manifest.json).")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="ONNX bundles: cpu, cuda or tensorrt.")]
MAX_THREADS = 256  # more would only thrash (100000 threads hung onnxruntime)
def _take_threads(value: Optional[int]) -> Optional[int]:
    """``--threads`` decides every thread count of the process (``core.threads``), not only the sessions'."""
    from restorekit.core.threads import limit_threads

    limit_threads(value)
    return value


ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, max=MAX_THREADS, callback=_take_threads,
                                                   help="CPU threads (default: all cores).")]


def print_error(text: str) -> None:
    """``error: text`` on stderr, the text printed as it is (a file named ``photo [x].png`` is not markup)."""
    from rich.text import Text

    err_console.print(Text.assemble(("error:", "bold red"), " ", " ".join(str(text).split())),
                      highlight=False, soft_wrap=True)


def _environment_error(exc: BaseException) -> str | None:
    """The one line for an error the user's machine or files cause, not restorekit: a full disk, a
    read-only or missing path, memory, an image decoder refusing a file; None for a bug."""
    if isinstance(exc, MemoryError):
        return "out of memory (a smaller --tile, fewer --threads or a smaller image needs less)"
    if isinstance(exc, OSError):
        where = f": {exc.filename}" if getattr(exc, "filename", None) else ""
        return f"{exc.strerror or type(exc).__name__}{where}" if exc.strerror else f"{exc}{where}"
    if type(exc).__module__ == "cv2" and type(exc).__name__ == "error":  # OpenCV's decoder and size limits
        lines = [ln for ln in str(exc).splitlines() if ln.strip()]
        return "OpenCV could not process the image: " + (lines[-1].strip() if lines else "error")
    return None


def user_errors(fn):
    """Turn RestorekitError into a one-line message on stderr and its exit code (2 for bad input);
    the last resort for the rest of what the user's input or machine causes (OSError, MemoryError,
    OpenCV's errors): one line and exit 2. Anything else is a bug and keeps its traceback, and with
    ``RESTOREKIT_DEBUG=1`` every error does."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RestorekitError as exc:
            if os.environ.get("RESTOREKIT_DEBUG") == "1":
                raise
            print_error(str(exc))
            raise typer.Exit(exc.exit_code) from None
        except Exception as exc:  # noqa: BLE001 - sorted into the user's (one line) and bugs (re-raised)
            line = _environment_error(exc)
            if line is None or os.environ.get("RESTOREKIT_DEBUG") == "1":
                raise
            print_error(line + " (RESTOREKIT_DEBUG=1 shows the traceback)")
            raise typer.Exit(2) from None

    return wrapper


def split_list(value: str | None, option: str | None = None) -> list[str] | None:
    """A comma-separated option as a list (None when not given). An ``option`` given but empty
    (``--targets ,``) is refused, naming it: it must not quietly mean "all"."""
    items = [v.strip() for v in value.split(",") if v.strip()] if value else []
    if option is not None and value is not None and not items:
        raise RestorekitError(f"{option} is empty: name at least one")
    return items or None


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``N`` or ``HxW`` sizes, comma-separated, each side at least 16."""
    sizes = []
    for part in text.split(","):
        h, _, w = part.strip().lower().partition("x")
        try:
            size = (int(h), int(w or h))
        except ValueError:
            raise RestorekitError(f"bad size {part!r}: use N or HxW, comma-separated (e.g. 256,512x384)") from None
        if min(size) < 16:
            raise RestorekitError(f"size {part!r} is too small (at least 16)")
        sizes.append(size)
    return sizes
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Allow the output to be the input photo (it is replaced).")]
KeepProfileOpt = Annotated[bool, typer.Option("--keep-profile", help="Write a photo that came in another colour profile (Adobe RGB, a scanner's) back in that profile, not in sRGB.")]
AllowUnvalidatedOpt = Annotated[bool, typer.Option(
    "--allow-unvalidated", help="Run a bundle even though it failed its quality gates when it was built.")]
