"""`restorekit bench`: latency percentiles, throughput, peak memory and achieved compute of
bundles and of their PyTorch reference, measured in one run.

Each (backend, input size) is measured in a fresh process (``bench_worker``), one after the
other, with the same thread count: peak RSS is then that backend's alone, and no runtime's
thread pool competes with another's.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit import __version__
from restorekit.bundle.manifest import MANIFEST_NAME, read_manifest
from restorekit.core.errors import BadInputError, RestorekitError
from restorekit.core.threads import available_cores

BENCH_SCHEMA_VERSION = 1
WORKER_TIMEOUT_S = 1800


@dataclass(frozen=True)
class CpuPeak:
    """Theoretical fp32 peak of this CPU: cores x clock x FLOP per cycle from its vector ISA."""

    isa: str
    flops_per_cycle: int  # per core, fp32
    ghz: float
    cores: int
    how: str

    def gflops(self, threads: int) -> float:
        """Peak GFLOP/s of this CPU on ``threads`` threads."""
        return self.flops_per_cycle * self.ghz * min(threads, self.cores)


def _cpuinfo() -> tuple[set[str], str, float | None]:
    flags, vendor, mhz = set(), "", []
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return flags, vendor, None
    for line in text.splitlines():
        key, _, val = line.partition(":")
        key = key.strip()
        if key in ("flags", "Features") and not flags:
            flags = set(val.split())
        elif key == "vendor_id" and not vendor:
            vendor = val.strip()
        elif key == "cpu MHz":
            mhz.append(float(val))
    return flags, vendor, (max(mhz) if mhz else None)


def cpu_peak() -> CpuPeak:
    """fp32 FMA peak per core: 2 FMA pipes x vector lanes x 2 FLOP (an upper bound).

    x86: AVX-512 64 FLOP/cycle (32 on AMD Zen 4, which runs AVX-512 as two 256-bit halves; Zen 5
    is recognised by avx512_vp2intersect), AVX2+FMA 32, AVX 16, SSE 8; ARM NEON (e.g. Jetson's
    Cortex-A78AE) 16. Clock: cpufreq's maximum when the kernel exposes it, else the highest
    "cpu MHz" in /proc/cpuinfo (a virtual machine often shows only the nominal clock).
    """
    flags, vendor, mhz = _cpuinfo()
    machine = platform.machine().lower()
    if "avx512f" in flags:
        zen4 = vendor == "AuthenticAMD" and "avx512_vp2intersect" not in flags
        isa, fpc = ("AVX-512 (Zen 4: 2x256-bit)", 32) if zen4 else ("AVX-512", 64)
    elif "avx2" in flags and "fma" in flags:
        isa, fpc = "AVX2+FMA", 32
    elif "avx" in flags:
        isa, fpc = "AVX", 16
    elif machine in ("aarch64", "arm64") or "asimd" in flags:
        isa, fpc = "NEON", 16
    else:
        isa, fpc = "SSE", 8
    ghz, source = None, ""
    max_freq = Path("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
    if max_freq.is_file():
        try:
            ghz, source = int(max_freq.read_text()) / 1e6, "cpufreq max"
        except (OSError, ValueError):
            ghz = None
    if ghz is None and mhz:
        ghz, source = mhz / 1e3, "/proc/cpuinfo cpu MHz"
    if ghz is None:
        ghz, source = 2.0, "unknown clock, assumed 2.0 GHz"
    cores = available_cores()
    how = f"{cores} cores x {ghz:.2f} GHz ({source}) x {fpc} fp32 FLOP/cycle ({isa}, 2 FMA pipes)"
    return CpuPeak(isa=isa, flops_per_cycle=fpc, ghz=round(ghz, 3), cores=cores, how=how)


def expand_bundles(paths: list[Path]) -> list[Path]:
    """Bundle directories from the arguments: a bundle, or a folder of bundles (e.g. bundles/NAME)."""
    out = []
    for p in paths:
        p = Path(p)
        if (p / MANIFEST_NAME).is_file():
            out.append(p)
        elif p.is_dir() and (found := sorted(d for d in p.iterdir() if (d / MANIFEST_NAME).is_file())):
            out.extend(found)
        elif not p.exists():
            raise BadInputError(f"bundle not found: {p}")
        else:
            raise BadInputError(f"not a bundle or a folder of bundles: {p}")
    return out


def bench_reference(bundle_dir: Path, reference: str | None = None) -> tuple[str, float | None]:
    """The reference to measure beside a bundle and its MACs per megapixel: ``reference`` (MACs
    unknown here), else the checkpoint the bundle was made from (MACs from its manifest)."""
    first = read_manifest(bundle_dir)
    if reference:
        return reference, None
    from restorekit.models.loader import default_reference

    return default_reference(first), first.source.get("macs_per_megapixel")


def _run_worker(spec: dict) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(spec["threads"]))
    proc = subprocess.run([sys.executable, "-m", "restorekit.eval.bench_worker", json.dumps(spec)],
                          capture_output=True, text=True, timeout=WORKER_TIMEOUT_S, env=env)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": f"worker exited {proc.returncode}: {tail}"}
    return json.loads(lines[-1])


def _row(label: str, kind: str, size: tuple[int, int], threads: int, macs_per_mp: float | None,
         peak_gflops: float, res: dict) -> dict:
    row = {"name": label, "kind": kind, "size": f"{size[0]}x{size[1]}", "threads": threads}
    if "error" in res:
        return {**row, "error": res["error"]}
    lat = np.asarray(res["latencies_ms"])
    p50 = float(np.percentile(lat, 50))
    mp = size[0] * size[1] / 1e6
    gflops = None if not macs_per_mp else 2 * macs_per_mp * mp / (p50 / 1e3) / 1e9
    return {
        **row, "device": res["device"], "tiles": res["tiles"], "tile": res.get("tile"), "runs": len(lat),
        "p50_ms": round(p50, 3), "p95_ms": round(float(np.percentile(lat, 95)), 3),
        "p99_ms": round(float(np.percentile(lat, 99)), 3), "mean_ms": round(float(lat.mean()), 3),
        "images_per_s": round(1e3 / float(lat.mean()), 3), "megapixels_per_s": round(mp * 1e3 / float(lat.mean()), 3),
        "peak_rss_mb": round(res["peak_rss_kb"] / 1024, 1),
        "gflops": None if gflops is None else round(gflops, 2),
        "fraction_of_peak": None if gflops is None else round(gflops / peak_gflops, 4),
    }


def bench(bundles: list[Path], reference: str | None, sizes: list[tuple[int, int]], runs: int = 30,
          warmup: int = 3, threads: int | None = None, provider: str = "cpu", on_step=None,
          reference_macs: float | None = None) -> dict:
    """Measure every bundle (and the reference, if given) at every size; return the JSON payload.

    ``reference_macs`` (MACs per input megapixel) spares loading the reference in this process
    when a bundle's manifest already says it (the reference then loads only in its worker)."""
    peak = cpu_peak()
    threads = int(threads or peak.cores)
    jobs, skipped = [], []
    manifests = [read_manifest(path) for path in bundles]  # checksums verified before anything runs
    several_models = len({m.name for m in manifests}) > 1
    for path, m in zip(bundles, manifests):
        if m.target == "coreml" and platform.system() != "Darwin":
            skipped.append({"name": f"{m.target}-{m.precision}", "reason": "Core ML runs only on macOS"})
            continue
        label = f"{m.name} {m.target}-{m.precision}" if several_models else f"{m.target}-{m.precision}"
        macs = m.source.get("macs_per_megapixel")
        for size in sizes:
            jobs.append((label, "bundle", size, macs, {"kind": "bundle", "path": str(path), "provider": provider}))
    if reference is not None:
        if reference_macs is None:  # a checkpoint not described by any manifest: load it once to count
            from restorekit.models.loader import load_model

            reference_macs = load_model(reference).spec.macs_per_megapixel
        for size in sizes:
            jobs.append(("pytorch-fp32 (reference)", "reference", size, reference_macs,
                         {"kind": "reference", "model": reference}))
    if not jobs:
        raise RestorekitError("nothing to benchmark here: " + "; ".join(f"{s['name']}: {s['reason']}" for s in skipped))
    measured = _run_worker({"kind": "peak", "threads": threads})
    if "error" in measured:
        raise RestorekitError(f"could not measure the CPU peak: {measured['error']}")
    peak_gflops = measured["gflops"]
    rows = []
    for i, (label, kind, size, macs, spec) in enumerate(jobs):
        if on_step:
            on_step(i, len(jobs), f"{label} {size[0]}x{size[1]}")
        res = _run_worker({**spec, "size": list(size), "runs": runs, "warmup": warmup, "threads": threads})
        rows.append(_row(label, kind, size, threads, macs, peak_gflops, res))
    if on_step:
        on_step(len(jobs), len(jobs), "done")
    for row in rows:  # speed relative to the reference at the same size, same run
        ref = next((r for r in rows if r["kind"] == "reference" and r["size"] == row["size"] and "p50_ms" in r), None)
        row["speedup_vs_reference"] = round(ref["p50_ms"] / row["p50_ms"], 3) if ref and "p50_ms" in row else None
    return {
        "schema_version": BENCH_SCHEMA_VERSION, "kind": "restorekit.bench", "toolkit_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "python": platform.python_version(),
                    "peak_gflops": round(peak_gflops, 1), "peak_how": measured["how"],
                    "theoretical_peak_gflops": round(peak.gflops(threads), 1), "theoretical_peak_how": peak.how},
        "settings": {"runs": runs, "warmup": warmup, "threads": threads, "provider": provider,
                     "sizes": [f"{h}x{w}" for h, w in sizes]},
        "results": rows, "skipped": skipped,
    }
