"""``restorekit eval | bench``: a bundle's fidelity and quality gates; latency and throughput."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from restorekit.cli.common import MAX_THREADS, BundleArg, ProviderOpt, err_console, out_console, parse_sizes


def _eval_table(data: dict, title: str, failing: set[str]) -> Table:
    """One row per image (failing ones in red) and the mean / worst row."""
    s = data["summary"]
    table = Table(title=title)
    for col in ("image", "PSNR dB", "SSIM", "max |diff|", "ΔE00", "non-finite", "new clipped"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for r in data["per_image"]:
        style = "red" if r["image"] in failing else None
        table.add_row(r["image"], f"{r['psnr_db']:.2f}", f"{r['ssim']:.4f}", f"{r['max_abs_err']:.2e}",
                      "–" if r["delta_e00"] is None else f"{r['delta_e00']:.3f}", str(r["nonfinite"]),
                      str(r["clipped_new"]), style=style)
    table.add_row(Text("mean / worst", style="bold"), f"{s['psnr_db_mean']:.2f} / {s['psnr_db_min']:.2f}", f"{s['ssim_mean']:.4f}",
                  f"{s['max_abs_err']:.2e}", "–" if s["delta_e00_mean"] is None else f"{s['delta_e00_mean']:.3f}",
                  str(s["nonfinite"]), str(s["clipped_new"]))
    return table


def eval_(
    bundle_dir: BundleArg,
    images: Annotated[Path, typer.Option("--images", help="Folder of real photos.")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference checkpoint (default: the one the bundle was made from, when it is the built-in model).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON (stable keys, schema_version).")] = None,
    html_path: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report (images and plots embedded).")] = None,
    min_psnr: Annotated[Optional[float], typer.Option("--min-psnr", help="Gate: every image and the mean >= this (dB).")] = None,
    min_ssim: Annotated[Optional[float], typer.Option("--min-ssim", help="Gate: every image and the mean >= this.")] = None,
    max_nonfinite: Annotated[Optional[int], typer.Option("--max-nonfinite", help="Gate: at most this many NaN/inf output values.")] = None,
    max_delta_e: Annotated[Optional[float], typer.Option("--max-delta-e", help="Gate: mean CIEDE2000 of every image <= this.")] = None,
    max_clipped_new: Annotated[Optional[int], typer.Option("--max-clipped-new", help="Gate: at most this many newly clipped pixels.")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="An earlier `eval --json` result to compare with.")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Gate with --baseline: PSNR may drop at most this (dB), per image and mean (default 0).")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="YAML/JSON file of per-bundle gates (command-line gates override it).")] = None,
    clean: Annotated[bool, typer.Option("--clean", help="The images are clean originals: also score reference and bundle against them after synthetic degradation (seed 0).")] = False,
    count: Annotated[int, typer.Option("--count", min=1, help="Number of photos to use.")] = 8,
    size: Annotated[Optional[int], typer.Option("--size", min=16, max=8192, help="Crop side (default: the bundle's tile).")] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs for latency.")] = 10,
    provider: ProviderOpt = "cpu",
):
    """Fidelity of a bundle vs its fp32 reference, quality, latency; gates exit 1 listing every failure."""

    from restorekit.core.errors import BadInputError
    from restorekit.core.files import atomic_write_text, check_writable_path, json_text
    from restorekit.eval.evaluate import evaluate_bundle
    from restorekit.eval.gates import Gates, load_policy
    from restorekit.eval.report import eval_html
    from restorekit.runtime import load_bundle

    for path in (json_path, html_path):
        if path is not None:
            check_writable_path(path)
    given = dict(min_psnr=min_psnr, min_ssim=min_ssim, max_nonfinite=max_nonfinite, max_delta_e=max_delta_e,
                 max_clipped_new=max_clipped_new, max_drop=max_drop)
    try:  # thresholds first: a NaN or negative one is a usage error, before any work
        command_gates = Gates(**given)
    except BadInputError as exc:
        name = next(k for k in given if f"gate {k} " in str(exc))
        raise BadInputError(str(exc).replace(f"gate {name}", "--" + name.replace("_", "-"), 1)) from None
    b = load_bundle(bundle_dir, provider=provider, allow_failed=True)  # eval is the gate itself
    m = b.manifest
    gates = load_policy(policy, [f"{m.target}-{m.precision}", f"{m.name}/{m.target}-{m.precision}"]) if policy else Gates()
    gates = gates.merged(command_gates)
    with err_console.status(f"evaluating {m.name} {m.target}-{m.precision} on {images} ..."):
        result, failures = evaluate_bundle(b, images, reference=reference, gates=gates, baseline=baseline,
                                           count=count, size=size, runs=runs, clean=clean)
    data, lat = result.data, result.data["latency"]
    out_console.print(_eval_table(data, f"{m.name} {m.target}-{m.precision} vs {data['reference']['device']}",
                                  {f.image for f in failures}))
    if data["quality"]:
        q = data["quality"]["mean"]
        out_console.print(f"quality vs clean originals (degraded, seed 0): bicubic {q['bicubic_psnr_db']:.2f} dB, "
                          f"reference {q['reference_psnr_db']:.2f} dB, bundle {q['bundle_psnr_db']:.2f} dB PSNR")
    out_console.print(f"latency p50/p95: bundle {lat['bundle_ms_p50']:.1f}/{lat['bundle_ms_p95']:.1f} ms "
                      f"({lat['bundle_device']}), reference {lat['reference_ms_p50']:.1f}/{lat['reference_ms_p95']:.1f} ms, "
                      f"same run, input {lat['input']}")
    if json_path:
        atomic_write_text(json_path, json_text(data, indent=2))
        out_console.print(f"wrote {json_path}")
    if html_path:
        atomic_write_text(html_path, eval_html(data, result.panels, failures, gates.active()))
        out_console.print(f"wrote {html_path}")
    if failures:
        err_console.print(Text(f"{len(failures)} gate failure(s):", style="bold red"))
        for f in failures:
            err_console.print(f"  ✗ {f}", highlight=False)
        raise typer.Exit(1)
    if gates.active() or baseline is not None:
        out_console.print(Text("gates passed", style="green"), f"({', '.join(f'{k} {v:g}' for k, v in gates.active().items()) or 'baseline'})")


def _bench_table(data: dict, runs: int, warmup: int) -> Table:
    """One row per backend and size."""
    table = Table(title=f"restorekit bench: {data['settings']['threads']} threads, {runs} runs after {warmup} warm-up, "
                        f"each backend in its own process, one after the other")
    cols = ("backend", "size", "tiles (plan)", "p50 ms", "p95 ms", "p99 ms", "img/s", "MP/s", "peak RSS MB",
            "GFLOP/s", "% CPU peak", "vs reference")
    for col in cols:
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in data["results"]:
        if "error" in r:
            table.add_row(r["name"], r["size"], "", Text(str(r["error"]), style="red"), *[""] * (len(cols) - 4))
            continue
        pct = "–" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f} %"
        gf = "–" if r["gflops"] is None else f"{r['gflops']:.1f}"
        sp = "–" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        plan = str(r["tiles"]) if not r.get("tile") else f"{r['tiles']} x {r['tile'][1]}x{r['tile'][0]}"
        table.add_row(r["name"], r["size"], plan, f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r['images_per_s']:.1f}", f"{r['megapixels_per_s']:.2f}",
                      f"{r['peak_rss_mb']:.0f}", gf, pct, sp)
    return table


def bench(
    bundles: Annotated[list[Path], typer.Argument(metavar="BUNDLE...", help="Bundle directories, or a folder of bundles (e.g. bundles/restorekit-x2).")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference checkpoint (default: the bundles' own when it is the built-in model).")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Do not measure the PyTorch reference.")] = False,
    sizes: Annotated[str, typer.Option("--sizes", help="Input sizes, N or HxW, comma-separated.")] = "256",
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per backend and size.")] = 30,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, max=MAX_THREADS, help="Threads for every runtime (default: all cores).")] = None,
    provider: ProviderOpt = "cpu",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
):
    """Latency p50/p95/p99, throughput, peak RSS and fraction of CPU peak, bundles and reference in one run."""

    from rich.progress import Progress

    from restorekit.core.errors import RestorekitError
    from restorekit.core.files import atomic_write_text, check_writable_path, json_text
    from restorekit.eval.bench import bench as run_bench, bench_reference, expand_bundles

    if json_path is not None:
        check_writable_path(json_path)
    dirs = expand_bundles(bundles)
    size_list = parse_sizes(sizes)
    ref, ref_macs = (None, None) if no_reference else bench_reference(dirs[0], reference)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("bench", total=None)
        data = run_bench(dirs, ref, size_list, runs=runs, warmup=warmup, threads=threads, provider=provider,
                         on_step=lambda i, n, what: progress.update(task, completed=i, total=n, description=what),
                         reference_macs=ref_macs)
    out_console.print(_bench_table(data, runs, warmup))
    mach = data["machine"]
    out_console.print(
        f"% CPU peak = GFLOP/s (2 x the model's MACs at the input size / p50; int8 counted the same way, so it can pass "
        f"100 %) over this CPU's measured fp32 peak, {mach['peak_gflops']:.0f} GFLOP/s: {mach['peak_how']}. Direct-conv "
        f"kernels can run slightly above a GEMM. Theoretical: {mach['theoretical_peak_gflops']:.0f} GFLOP/s = "
        f"{mach['theoretical_peak_how']}" + (" — below the measured rate, so the clock shown is not the running clock"
                                             if mach["theoretical_peak_gflops"] < mach["peak_gflops"] else ""),
        highlight=False)
    for s in data["skipped"]:
        out_console.print(f"skipped {s['name']}: {s['reason']}")
    if json_path:
        atomic_write_text(json_path, json_text(data, indent=2))
        out_console.print(f"wrote {json_path}")
    if any("error" in r for r in data["results"]):
        raise RestorekitError("some measurements failed: " + "; ".join(f"{r['name']} {r['size']}: {r['error']}"
                                                                        for r in data["results"] if "error" in r))
