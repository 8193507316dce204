"""What every CLI module shares: the consoles and the one-line-error wrapper."""

from __future__ import annotations

import functools
import sys

import typer
from rich.console import Console

from restorekit.core.errors import RestorekitError

# Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
out_console = Console(width=None if sys.stdout.isatty() else 160)
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


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
