"""The README: short, free of dates and ../shared paths, its results table generated from the
measured report, and every `restorekit` command in it exercised — cheap ones here, expensive ones
by the tests named in COVERED_BY."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path


ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
REPORT = ROOT / "docs" / "results" / "restorekit-x2.report.json"
SAMPLES = ROOT / "sample_images"
MAX_WORDS = 1500

#: README commands run here, in a subprocess, with outputs sent to tmp files (all documented to exit 0).
RUN_HERE = {"--help", "zoo list", "zoo info", "inspect", "assess"}

#: README commands too slow to run here: the test file that runs each one (with small inputs).
COVERED_BY = {
    "bundle": "tests/test_bundle_main.py",
    "run": "tests/test_bundle_main.py",
    "eval": "tests/test_bundle_main.py",
    "restore": "tests/test_restore.py",
    "zoo fetch": "tests/test_zoo.py",
    "convert": "tests/test_user_checkpoint.py",
    "quantize": "tests/test_quantize_recipes.py",
    "bench": "tests/test_bench.py",
    "trt-build": "tests/test_tensorrt.py",
    "degrade": "tests/test_degrade.py",
    "train": "tests/test_train.py",
    "distill": "tests/test_distill.py",
}
#: The README's Python example with a real bundle: the test that runs load_bundle + restore_photo.
PYTHON_EXAMPLE_COVERED_BY = "tests/test_runtime_isolation.py"

OUTPUT_OPTIONS = {"-o", "--output", "--json", "--html", "--compare", "--out"}
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff")


def _results_table():
    spec = importlib.util.spec_from_file_location("results_table", ROOT / "scripts" / "results_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _code_blocks(lang: str | None = None) -> list[str]:
    text = README.read_text(encoding="utf-8")
    blocks = re.findall(r"^```([^\n]*)\n(.*?)^```", text, flags=re.S | re.M)
    return [body for tag, body in blocks if lang is None or tag.strip() == lang]


def readme_commands() -> list[list[str]]:
    """Every `restorekit ...` command line in the README's code blocks, as the argv after it."""
    commands = []
    for block in _code_blocks():
        for line in block.splitlines():
            for m in re.finditer(r"(?:^|[\s/])restorekit\s+([^&|;#\n]+)", line):
                commands.append(shlex.split(m.group(1)))
    return commands


def subcommand(argv: list[str]) -> str:
    """``zoo fetch`` for ``zoo fetch NAME``; ``bundle`` for ``bundle MODEL --targets ...``."""
    if argv[0] == "zoo" and len(argv) > 1:
        return f"zoo {argv[1]}"
    return argv[0]


def _localize(argv: list[str], tmp_path: Path) -> list[str]:
    """Outputs to tmp files; missing input photos to a tmp copy of a sample; an `inspect` model
    that is not a file here (a zoo name, not downloaded in a test) to the built-in model —
    zoo-name resolution is tests/test_zoo.py's."""
    out, after_output_option = [], False
    for i, tok in enumerate(argv):
        if after_output_option:
            out.append(str(tmp_path / Path(tok).name))
        elif subcommand(argv) == "inspect" and i > 0 and not tok.startswith("-") and not (ROOT / tok).exists():
            out.append("default")
        elif tok.lower().endswith(IMAGE_SUFFIXES) and not (ROOT / tok).exists():
            shutil.copy(SAMPLES / "aged" / "camera.jpg", tmp_path / Path(tok).name)
            out.append(str(tmp_path / Path(tok).name))
        else:
            out.append(tok)
        after_output_option = tok in OUTPUT_OPTIONS
    return out


def test_readme_is_short_and_has_no_dates_or_shared_paths():
    text = README.read_text(encoding="utf-8")
    words = len(text.split())
    assert words < MAX_WORDS, f"README.md has {words} words (limit {MAX_WORDS})"
    assert "../shared" not in text
    dates = re.findall(r"\b\d{4}-\d{2}-\d{2}\b", text)
    assert not dates, f"README.md has dates (they belong in docs/): {dates}"


def test_readme_keeps_the_two_setup_commands():
    text = README.read_text(encoding="utf-8")
    assert "python3 -m venv .venv && .venv/bin/pip install -e '.[all]' && .venv/bin/restorekit bundle\n" in text
    assert ("python3 -m venv .venv && .venv/bin/pip install -e '.[all]' && "
            ".venv/bin/python -m pytest -q --durations=25\n") in text


def test_results_table_is_generated_from_the_measured_report():
    rt = _results_table()
    assert REPORT.is_file(), f"{REPORT} is missing"
    current = rt.current_block(README.read_text(encoding="utf-8"))
    assert current, "README.md has no <!-- results:start --> ... <!-- results:end --> block"
    assert current == rt.expected_block(REPORT), (
        "README's results table differs from docs/results/restorekit-x2.report.json: "
        "run `python scripts/results_table.py`")
    assert rt.main(["--check"]) == 0


def test_every_readme_command_is_exercised():
    commands = readme_commands()
    assert len(commands) >= 8, commands  # the extraction still finds the README's commands
    for argv in commands:
        sub = subcommand(argv)
        assert sub in RUN_HERE or sub in COVERED_BY, f"`restorekit {shlex.join(argv)}` is run by no test"
        if sub in COVERED_BY:
            test_file = ROOT / COVERED_BY[sub]
            assert test_file.is_file(), f"{COVERED_BY[sub]} (covers `restorekit {sub}`) is missing"
            word = sub.split()[-1]
            assert f'"{word}"' in test_file.read_text(), f"{COVERED_BY[sub]} does not run `restorekit {sub}`"


def test_cheap_readme_commands_run_and_exit_0(tmp_path):
    env = {**os.environ, "RESTOREKIT_CACHE": str(tmp_path / "cache"), "COLUMNS": "200"}
    ran = set()
    for argv in readme_commands():
        if subcommand(argv) not in RUN_HERE:
            continue
        args = _localize(argv, tmp_path)
        res = subprocess.run([sys.executable, "-m", "restorekit.cli.main", *args], cwd=ROOT, env=env,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, f"restorekit {shlex.join(args)} exited {res.returncode}: {res.stderr[-2000:]}"
        ran.add(subcommand(argv))
    assert {"zoo list", "zoo info", "assess"} <= ran, ran


def test_cli_table_lists_every_command_and_each_has_help():
    """The README's command table names every registered command, and each answers --help."""
    import typer
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| `restorekit ([a-z-]+(?: (?:list|info|fetch))?)", text, flags=re.M)
    group = typer.main.get_command(app)
    registered = set()
    for name, cmd in group.commands.items():
        sub = getattr(cmd, "commands", None)
        registered |= {f"{name} {s}" for s in sub} if sub else {name}
    assert set(rows) == registered, f"README table: {sorted(set(rows))}; CLI: {sorted(registered)}"
    runner = CliRunner()
    for row in rows:
        res = runner.invoke(app, [*row.split(), "--help"])
        assert res.exit_code == 0, (row, res.output)


def test_python_example_names_resolve_and_write_a_photo(tmp_path, monkeypatch):
    """The README's five lines, with load_bundle stubbed (a real bundle: PYTHON_EXAMPLE_COVERED_BY)."""
    import restorekit.runtime as runtime

    (code,) = _code_blocks("python")
    assert "load_bundle" in code and "restore_photo" in code
    assert callable(getattr(runtime.Bundle, "restore_photo", None))
    assert "restore_photo" in (ROOT / PYTHON_EXAMPLE_COVERED_BY).read_text()

    opened = []

    class Identity:
        def restore_photo(self, photo):
            return photo

    monkeypatch.setattr(runtime, "load_bundle", lambda path, **kw: opened.append(path) or Identity())
    shutil.copy(SAMPLES / "aged" / "chelsea.jpg", tmp_path / "old.jpg")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, str(README), "exec"), {"__name__": "readme_example"})
    assert opened == ["bundles/restorekit-x2/onnx-int8"]
    from restorekit.core.image import read_image

    assert read_image(tmp_path / "restored.png").size == read_image(tmp_path / "old.jpg").size
