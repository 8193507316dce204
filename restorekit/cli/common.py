"""What every CLI module shares: the consoles, the one-line-error wrapper, the options several
command groups take, and the small parsers of option values."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from restorekit.core.errors import RestorekitError

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)

ModelArg = Annotated[Optional[str], typer.Argument(help="Checkpoint (.pth/.pt/.ckpt/.safetensors), a zoo name (restorekit zoo list) or 'default' (the built-in model).")]
BundleArg = Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory (with manifest.json).")]
ProviderOpt = Annotated[str, typer.Option("--provider", help="ONNX bundles: cpu, cuda or tensorrt.")]
ThreadsOpt = Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")]


def user_errors(fn):
    """Turn RestorekitError into a one-line message on stderr and exit code 2."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except RestorekitError as exc:
            err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(exc.exit_code) from None

    return wrapper


def split_list(value: str | None) -> list[str] | None:
    """A comma-separated option as a list (None when empty)."""
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


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
AllowUnvalidatedOpt = Annotated[bool, typer.Option(
    "--allow-unvalidated", help="Run a bundle even though it failed its quality gates when it was built.")]
