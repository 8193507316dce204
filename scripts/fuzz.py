"""Coverage-guided fuzzing (atheris, libFuzzer) of restorekit's readers of untrusted input.

    python scripts/fuzz.py --seconds 60                 # every target, the time shared (what .ci/run does)
    python scripts/fuzz.py image manifest --seconds 600 # a longer campaign of some targets
    python scripts/fuzz.py --write-corpus               # rewrite the checked-in seed corpus

The targets and their seeds are tests/fuzz_targets.py (the seeded mutation tests use the same ones).
Each target runs in its own process, restorekit's modules instrumented for coverage, starting from
the checked-in seed corpus (tests/fuzz_corpus/TARGET, read-only) and a fresh working corpus; the
only exception allowed out of a target is a one-line RestorekitError. A crash stops that target,
its input is kept under --artifacts, and the run exits 1. The table at the end gives the executions
per target and the corpus size reached.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
#: libFuzzer's limits per target: memory (MB) and seconds per input.
RSS_LIMIT_MB, INPUT_TIMEOUT_S = 3072, 20


def write_corpus() -> None:
    """Write every target's seeds into tests/fuzz_corpus/TARGET/ (replacing what was there)."""
    from tests.fuzz_targets import CORPUS, TARGETS

    for name, target in TARGETS.items():
        folder = CORPUS / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for file_name, data in target.seeds().items():
            (folder / file_name).write_bytes(data)
        print(f"{folder.relative_to(ROOT)}: {len(target.seeds())} seeds")


def worker(name: str, seconds: int, corpus: Path, artifacts: Path) -> None:
    """Fuzz one target in this process (called through a subprocess by ``main``)."""
    import atheris

    with atheris.instrument_imports(include=["restorekit"]):
        from tests import fuzz_targets
        import restorekit.bundle.manifest  # noqa: F401 - instrumented before first use
        import restorekit.core.image  # noqa: F401
        import restorekit.core.metadata  # noqa: F401
        import restorekit.eval.gates  # noqa: F401
        import restorekit.quantize.recipe  # noqa: F401
        if name == "checkpoint":
            import restorekit.models.loader  # noqa: F401
    target = fuzz_targets.TARGETS[name]
    folder = Path(tempfile.mkdtemp(prefix=f"restorekit-fuzz-{name}-"))
    fuzz_targets.prepare_folder(folder)

    def one_input(data: bytes) -> None:
        fuzz_targets.run_target(target, data, folder)

    seeds = fuzz_targets.CORPUS / name
    args = [sys.argv[0], str(corpus), str(seeds), f"-max_total_time={seconds}", f"-rss_limit_mb={RSS_LIMIT_MB}",
            f"-timeout={INPUT_TIMEOUT_S}", f"-artifact_prefix={artifacts}/{name}-", "-print_final_stats=1"]
    atheris.Setup(args, one_input)
    atheris.Fuzz()


def main(argv: list[str] | None = None) -> int:
    from tests.fuzz_targets import TARGETS

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("targets", nargs="*", help=f"targets to fuzz (default all: {', '.join(TARGETS)})")
    ap.add_argument("--seconds", type=int, default=60, help="total fuzzing time, shared by the targets")
    ap.add_argument("--artifacts", type=Path, default=None, help="where crashing inputs are kept (default: a temp dir)")
    ap.add_argument("--write-corpus", action="store_true", help="rewrite tests/fuzz_corpus from tests/fuzz_targets.py")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--corpus", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.write_corpus:
        write_corpus()
        return 0
    if args.worker:
        worker(args.worker, args.seconds, args.corpus, args.artifacts)
        return 0
    names = args.targets or list(TARGETS)
    unknown = [n for n in names if n not in TARGETS]
    if unknown:
        ap.error(f"unknown target {', '.join(unknown)}: choose from {', '.join(TARGETS)}")
    artifacts = args.artifacts or Path(tempfile.mkdtemp(prefix="restorekit-fuzz-artifacts-"))
    artifacts.mkdir(parents=True, exist_ok=True)
    each = max(5, args.seconds // len(names))
    rows, failed = [], []
    for name in names:
        corpus = Path(tempfile.mkdtemp(prefix=f"restorekit-fuzz-corpus-{name}-"))
        start = time.monotonic()
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}
        log_path = artifacts / f"{name}.log"  # decoders print much to stderr; libFuzzer prints raw input bytes
        with open(log_path, "wb") as log_file:
            proc = subprocess.run([sys.executable, __file__, "--worker", name, "--seconds", str(each), "--corpus",
                                   str(corpus), "--artifacts", str(artifacts)], stdout=log_file, stderr=subprocess.STDOUT,
                                  env=env)
        log = log_path.read_bytes()[-200_000:].decode("utf-8", "replace")
        runs = re.findall(r"stat::number_of_executed_units:\s*(\d+)", log) or re.findall(r"Done (\d+) runs", log)
        seeds = len(list((ROOT / "tests" / "fuzz_corpus" / name).iterdir()))
        rows.append((name, time.monotonic() - start, int(runs[-1]) if runs else 0, seeds, len(list(corpus.iterdir()))))
        if proc.returncode != 0:
            failed.append(name)
            tail = [ln for ln in log.splitlines() if not ln.startswith(("[ERROR", "[ WARN", "Corrupt JPEG"))]
            print(f"--- {name}: exit {proc.returncode} (log: {log_path})\n" + "\n".join(tail[-40:]), file=sys.stderr)
        shutil.rmtree(corpus, ignore_errors=True)
    print(f"{'target':<11} {'seconds':>8} {'executions':>11} {'seeds':>6} {'corpus':>7}")
    for name, secs, runs, seeds, corpus in rows:
        print(f"{name:<11} {secs:8.0f} {runs:11d} {seeds:6d} {corpus:7d}")
    if failed:
        print(f"crashes in {', '.join(failed)}: inputs under {artifacts}", file=sys.stderr)
        return 1
    print("no exception other than a one-line RestorekitError")
    return 0


if __name__ == "__main__":
    sys.exit(main())
