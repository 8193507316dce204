"""One `restorekit bench` measurement in a process of its own.

    python -m restorekit.eval.bench_worker '{"kind": "bundle", "path": ..., "size": [256, 256], ...}'

A fresh process per backend gives each its own peak resident memory (``ru_maxrss``) and keeps
thread pools of different runtimes from competing. Bundle workers import only the runtime (no
torch), as on an edge box. Prints one JSON object on stdout.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def _rss_kb() -> int:
    """Peak resident set of this process so far, in KiB.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own memory.
    (``ru_maxrss`` would not do: exec keeps the parent's peak in it, so a worker started by a
    parent holding torch would report the parent's memory.) Elsewhere ``ru_maxrss``.
    """
    try:
        for line in open("/proc/self/status", encoding="ascii"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak // 1024) if sys.platform == "darwin" else int(peak)  # bytes on macOS, KiB on Linux


#: ``python -c CLI_PEAK_WRAPPER ARGS``: ``restorekit ARGS`` run in this process, then its peak resident
#: memory since exec (VmHWM) printed last on stderr as ``peak_rss_kb=N`` (Linux only). Self-contained, so
#: it measures whatever ``restorekit`` the child imports (another checkout through PYTHONPATH too).
CLI_PEAK_WRAPPER = """
import runpy, sys
sys.argv = ["restorekit", *sys.argv[1:]]
code = 0
try:
    runpy.run_module("restorekit.cli.main", run_name="__main__")
except SystemExit as exc:
    code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
hwm = next(line.split()[1] for line in open("/proc/self/status") if line.startswith("VmHWM:"))
print(f"peak_rss_kb={hwm}", file=sys.stderr)
sys.exit(code)
"""


def run_cli_peak(args: list[str], env: dict | None = None, cwd: str | None = None) -> tuple[int, float, float, str]:
    """``restorekit ARGS`` in a process of its own (Linux): (exit code, wall seconds, peak RSS in MB
    of that program alone, its stderr)."""
    import subprocess

    t0 = time.perf_counter()
    res = subprocess.run([sys.executable, "-c", CLI_PEAK_WRAPPER, *args], env=env, cwd=cwd,
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, errors="replace")
    wall = time.perf_counter() - t0
    lines = res.stderr.rstrip().splitlines()
    peak = float(lines[-1].split("=", 1)[1]) / 1024 if lines and lines[-1].startswith("peak_rss_kb=") else float("nan")
    return res.returncode, wall, peak, "\n".join(lines[:-1])


#: A one-node ONNX model, C = MatMul(A, B) with dynamic float32 [M, K] x [K, N] (ir 8, opset 17),
#: serialized so that a runtime-only install (no ``onnx`` package) can measure the CPU's practical
#: fp32 peak. ``tests/test_bench.py`` rebuilds it with ``onnx.helper`` and compares the bytes.
MATMUL_ONNX_B64 = ("CAg6XAoRCgFhCgFiEgFjIgZNYXRNdWwSAm1tWhUKAWESEAoOCAESCgoDEgFNCgMSAUtaFQoBYhIQCg4IARIKCgMSAUsKAxIBTmIV"
                   "CgFjEhAKDggBEgoKAxIBTQoDEgFOQgQKABAR")
PEAK_MATMUL_N = 2048


def measure_peak(threads: int, n: int = PEAK_MATMUL_N, repeats: int = 5) -> dict:
    """Practical fp32 peak: best GFLOP/s of an n x n x n ONNX Runtime MatMul (MLAS sgemm) with
    ``threads`` threads, the rate a tuned GEMM reaches on this CPU."""
    import base64

    import numpy as np
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    sess = ort.InferenceSession(base64.b64decode(MATMUL_ONNX_B64), opts, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.random((n, n), dtype=np.float32), "b": rng.random((n, n), dtype=np.float32)}
    best = min(_time(lambda: sess.run(None, feeds), repeats, 1))
    return {"gflops": 2 * n**3 / (best / 1e3) / 1e9, "how": f"best of {repeats} ONNX Runtime fp32 MatMul "
            f"{n}x{n}x{n} (MLAS) with {threads} threads"}


def _time(fn, runs: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def measure(spec: dict) -> dict:
    """Latencies (ms), peak RSS and what ran, for ``spec`` (see ``restorekit.eval.bench``)."""
    import numpy as np

    h, w = spec["size"]
    threads = int(spec["threads"])
    rng = np.random.default_rng(0)
    rss_start = _rss_kb()
    if spec["kind"] == "reference":
        import torch

        torch.set_num_threads(threads)
        from restorekit.models.loader import load_model
        from restorekit.models.reference import TorchSession

        rss_start = _rss_kb()
        session = TorchSession(load_model(spec["model"]).module)
        x = rng.random((1, 3, h, w), dtype=np.float32)
        fn, tiles, device = (lambda: session.run(x)), 1, session.device
    else:
        from restorekit.runtime import load_bundle

        rss_start = _rss_kb()
        bundle = load_bundle(spec["path"], provider=spec["provider"], threads=threads, allow_failed=True)
        plan = bundle.tile_plan(h, w)  # what `restorekit run` does with this size: the MP/s of its plan
        if plan["tiles"] == 1 and plan["tile"] == [h, w]:
            x = rng.random((1, 3, h, w), dtype=np.float32)
            fn = lambda: bundle.session.run(x)  # noqa: E731
        else:
            rgb = rng.random((h, w, 3), dtype=np.float32)
            fn = lambda: bundle.upscale(rgb)  # noqa: E731
        tiles = plan["tiles"]
        device = bundle.session.device
    lat = _time(fn, int(spec["runs"]), int(spec["warmup"]))
    return {"latencies_ms": lat, "tiles": tiles, "tile": None if spec["kind"] == "reference" else plan["tile"],
            "device": device,
            "rss_start_kb": rss_start, "peak_rss_kb": _rss_kb()}


def main() -> int:
    """Run one measurement described by the JSON in argv and print its result as JSON."""
    spec = json.loads(sys.argv[1])
    try:
        result = measure_peak(int(spec["threads"])) if spec["kind"] == "peak" else measure(spec)
    except Exception as exc:  # reported to the parent as one line, which shows it
        result = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    os._exit(0)  # skip interpreter teardown of native runtimes


if __name__ == "__main__":
    sys.exit(main())
