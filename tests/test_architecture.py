"""The house rules of docs/architecture.md, checked on the source: layers (import-linter), no import cycle,
no private name reached across modules, no function over 100 lines, docstrings on public functions."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "restorekit"
#: Code whose imports are checked for private names (the package and everything that uses it).
IMPORTING_TREES = ("restorekit", "benchmarks", "scripts", "tests")
MAX_FUNCTION_LINES = 100
#: Functions allowed over MAX_FUNCTION_LINES, each with its reason (at most three).
LONG_FUNCTION_ALLOWED: dict[str, str] = {}


def _sources(*trees: str) -> list[Path]:
    return sorted(p for t in trees for p in (ROOT / t).rglob("*.py"))


def _functions(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node


def test_layer_contracts_hold():
    exe = shutil.which("lint-imports") or str(Path(sys.executable).with_name("lint-imports"))
    if not Path(exe).exists():
        pytest.fail("lint-imports is not installed: it is part of the 'all' extra (import-linter)")
    res = subprocess.run([exe, "--no-cache"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-2000:]
    assert "0 broken" in res.stdout


def test_no_import_cycle():
    import grimp

    graph = grimp.build_graph("restorekit")
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.find_modules_directly_imported_by(v):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    assert not cycles, f"import cycles: {cycles}"


def private_imports(paths: list[Path]) -> list[str]:
    """``from <our module> import _name`` statements in ``paths``."""
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ImportFrom):
                continue
            ours = node.level > 0 or (node.module or "").split(".")[0] in ("restorekit", "tests", "benchmarks", "scripts")
            private = [a.name for a in node.names if a.name.startswith("_") and not a.name.startswith("__")]
            if ours and private:
                found.append(f"{path}:{node.lineno} imports {', '.join(private)} from {node.module}")
    return found


def long_functions(paths: list[Path]) -> list[str]:
    """Functions in ``paths`` over MAX_FUNCTION_LINES lines that are not allowed by name."""
    long = []
    for path in paths:
        for fn in _functions(ast.parse(path.read_text(encoding="utf-8"))):
            lines = fn.end_lineno - fn.lineno + 1
            key = f"{path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path}::{fn.name}"
            if lines > MAX_FUNCTION_LINES and key not in LONG_FUNCTION_ALLOWED:
                long.append(f"{key} ({lines} lines)")
    return long


def undocumented(paths: list[Path]) -> list[str]:
    """Public module-level functions and classes, and public methods of public classes, without a docstring."""
    missing = []
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        scopes = [tree] + [n for n in tree.body if isinstance(n, ast.ClassDef) and not n.name.startswith("_")]
        for scope in scopes:
            for node in scope.body:
                if (isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                        and not node.name.startswith("_") and not ast.get_docstring(node)):
                    missing.append(f"{path}:{node.lineno} {node.name}")
    return missing


def test_no_private_name_imported_from_another_module():
    found = private_imports(_sources(*IMPORTING_TREES))
    assert not found, "\n".join(found)


def test_no_function_over_100_lines():
    assert len(LONG_FUNCTION_ALLOWED) <= 3
    long = long_functions(_sources("restorekit"))
    assert not long, "functions over 100 lines: " + ", ".join(long)


def test_public_functions_have_docstrings():
    missing = undocumented(_sources("restorekit"))
    assert not missing, "public names without a docstring:\n" + "\n".join(missing)


def test_the_checks_catch_what_they_look_for(tmp_path):
    """Each check flags a file that breaks its rule, so a green run means something."""
    bad = tmp_path / "bad.py"
    bad.write_text("from restorekit.core.files import _hidden\n\n\ndef big():\n" + "    x = 1\n" * 101)
    assert private_imports([bad]) and long_functions([bad]) and undocumented([bad])
    good = tmp_path / "good.py"
    good.write_text('from restorekit.core.files import sha256_file\n\n\ndef small():\n    """Small."""\n')
    assert not (private_imports([good]) or long_functions([good]) or undocumented([good]))
