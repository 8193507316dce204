"""``restorekit zoo``: list, describe and fetch the known teacher checkpoints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from restorekit.cli.common import err_console, out_console, user_errors
from restorekit.models import zoo

zoo_app = typer.Typer(name="zoo", help="Known teacher checkpoints: list, info, verified download.",
                      no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)

NameArg = Annotated[str, typer.Argument(help="Zoo model name (see `restorekit zoo list`).")]
NC_MARK = Text("NON-COMMERCIAL", style="bold red")


def _size(n: int | None) -> str:
    return "?" if n is None else f"{n / 1e6:.1f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"


def _licence(e: zoo.ZooEntry, short: bool = True) -> Text:
    text = e.licence.split(";")[0] if short else e.licence
    return Text.assemble(NC_MARK, " ", text) if e.non_commercial else Text(text)


def _status(e: zoo.ZooEntry) -> tuple[str, Path]:
    path = zoo.models_dir() / e.filename
    if zoo.cached_path(e.name) is not None:
        return "installed, sha256 verified", path
    part = path.with_name(path.name + ".part")
    if path.exists():
        return "present but NOT verified (re-run fetch to replace it)", path
    if part.exists():
        return f"partial download, {_size(part.stat().st_size)} (fetch resumes it)", path
    return "not downloaded", path


@zoo_app.command("list")
@user_errors
def list_cmd():
    """Table of every zoo model: task, architecture, scale, size, licence, cached."""
    table = Table(title=f"restorekit zoo  (cache: {zoo.models_dir()})")
    for col, just in (("name", "left"), ("task", "left"), ("arch", "left"), ("scale", "right"),
                      ("size", "right"), ("licence", "left"), ("cached", "center")):
        table.add_column(col, justify=just, no_wrap=col in ("name", "task", "scale", "size", "cached"))
    for e in zoo.list_entries():
        cached = Text("✓", style="green") if zoo.cached_path(e.name) is not None else "–"
        table.add_row(e.name, e.task, e.arch, f"x{e.scale}", _size(e.size), _licence(e), cached)
    out_console.print(table)
    if any(e.non_commercial for e in zoo.list_entries()):
        out_console.print(Text.assemble(NC_MARK, ": licensed for non-commercial use only (see `restorekit zoo info NAME`)."))


@zoo_app.command("info")
@user_errors
def info_cmd(name: NameArg):
    """Every field of one zoo model, with its cache path and status."""
    e = zoo.get_entry(name)
    status, path = _status(e)
    table = Table(show_header=False, box=None, title=e.name)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    rows = [("description", e.description), ("task", e.task), ("architecture", e.arch), ("scale", f"x{e.scale}"),
            ("io contract", e.io), ("licence", _licence(e, short=False)),
            ("commercial use", "no (non-commercial licence)" if e.non_commercial else "allowed by the licence"),
            ("file", e.filename), ("size", _size(e.size) + ("" if e.size is None else f" ({e.size} bytes)")),
            ("url", e.url), ("sha256", e.sha256 or "none published (fetch needs --trust-unverified)")]
    rows += [("also accepted", h) for h in e.also_sha256]
    rows += [("sha256 source", e.sha256_source or "–"), ("cache path", str(path)), ("status", status)]
    for key, value in rows:
        table.add_row(key, value)
    out_console.print(table)


@zoo_app.command("fetch")
@user_errors
def fetch_cmd(
    name: NameArg,
    from_file: Annotated[Optional[Path], typer.Option("--from", help="Install a file you downloaded yourself (verified first).")] = None,
    trust_unverified: Annotated[bool, typer.Option("--trust-unverified", help="Install even when no sha256 is published for this model.")] = False,
):
    """Download (resuming a partial file) or install from --from FILE, verified by sha256."""
    e = zoo.get_entry(name)
    if from_file is not None:
        path = zoo.install_from(e.name, from_file, trust_unverified=trust_unverified)
    else:
        path = zoo.fetch(e.name, progress=True, trust_unverified=trust_unverified)
    digest = zoo.recorded_sha256(path) or "?"
    note = "verified" if digest in e.accepted_sha256 else "UNVERIFIED (no published hash; trusted on request)"
    out_console.print(f"{e.name}: {path}  sha256 {digest} ({note})", soft_wrap=True, highlight=False)
    if e.non_commercial:
        err_console.print(f"note: {e.name} is licensed for non-commercial use only: {e.licence}",
                          soft_wrap=True, highlight=False)
