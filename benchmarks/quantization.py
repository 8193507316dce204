"""Quantization schemes side by side: fidelity, speed and size per model x target x scheme.

    python benchmarks/quantization.py --models compact,builtin --targets onnx,tflite,coreml

Every quantized model is compared with the fp32 model of the SAME backend (ONNX Runtime or
LiteRT): PSNR / SSIM on held-out 256x256 centre crops of photos never used for calibration
(calibration: sample_images + shared/photos/old; evaluation: shared/photos/bw, faces, whole),
and speed-up = fp32 ms / scheme ms (median of interleaved runs at 256x256, 2 threads). Core ML
cannot run on Linux: its rows give the size and the PSNR of the PyTorch model carrying the
decompressed weights. ONNX also gets a naive ORT QDQ row (quantize_static, no float preparation).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shlex
import sys
import tempfile
import time
from datetime import datetime, timezone
from itertools import zip_longest
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared"
MODELS = {"compact": SHARED / "weights" / "realesr-animevideov3.pth", "builtin": None}
CALIB_DIRS = [ROOT / "sample_images", SHARED / "photos" / "old"]
EVAL_DIRS = [SHARED / "photos" / d for d in ("bw", "faces", "whole")]
TILE = 256  # conversion tile (TFLite's static input), calibration tiles, eval crops, timing input
THREADS = 2
NAIVE = "ort-qdq-naive"
SLOW = 10  # a scheme this many times slower than fp32 is timed over 3 runs (its ratio is clear anyway)
FINETUNED = "w8a8+ft"  # w8a8 with quantization-aware fine-tuning (recipe finetune: {steps: N})


def calibration(count: int) -> list[np.ndarray]:
    """``count`` calibration tiles spread over the calibration folders."""
    from restorekit.quantize.calibration import calibration_tiles

    k = len(CALIB_DIRS)
    counts = [count // k + (i < count % k) for i in range(k)]
    return [t for i, (d, n) in enumerate(zip(CALIB_DIRS, counts)) if n
            for t in calibration_tiles(d, tile=TILE, count=n, seed=i)]


def eval_crops(count: int) -> list[np.ndarray]:
    """Centre crops (NCHW, padded if small) of held-out photos, taken in turn from each folder."""
    from restorekit.core.image import list_images, read_image
    from restorekit.runtime.tiling import pad_to

    paths = [p for row in zip_longest(*[list_images(d) for d in EVAL_DIRS]) for p in row if p is not None]
    crops = []
    for p in paths[:count]:
        img = pad_to(read_image(p).rgb, TILE, TILE)
        y, x = (img.shape[0] - TILE) // 2, (img.shape[1] - TILE) // 2
        crops.append(np.ascontiguousarray(img[y : y + TILE, x : x + TILE].transpose(2, 0, 1)[None], np.float32))
    return crops


GT_HR = 512  # ground-truth crops: HR side; the degraded LR input is GT_HR / scale, padded to TILE


def gt_pairs(count: int, scale: int, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(LR input NCHW padded to TILE, clean HR HxWx3) pairs: held-out photo centre crops degraded by
    the Real-ESRGAN-style second-order pipeline (``restorekit.degrade.synthetic``) at ``scale``."""
    from restorekit.degrade.synthetic import degrade_pair
    from restorekit.core.image import list_images, read_image
    from restorekit.runtime.tiling import pad_to

    rng = np.random.default_rng(seed)
    paths = [p for row in zip_longest(*[list_images(d) for d in EVAL_DIRS]) for p in row if p is not None]
    pairs = []
    for p in paths:
        img = read_image(p).rgb
        if min(img.shape[:2]) < GT_HR:
            continue
        y, x = (img.shape[0] - GT_HR) // 2, (img.shape[1] - GT_HR) // 2
        hr = np.ascontiguousarray(img[y:y + GT_HR, x:x + GT_HR], np.float32)
        lr = pad_to(degrade_pair(hr, scale, rng), TILE, TILE)
        pairs.append((np.ascontiguousarray(lr.transpose(2, 0, 1)[None], np.float32), hr))
        if len(pairs) == count:
            break
    return pairs


def gt_psnr(run, pairs) -> float:
    """Mean PSNR against the clean HR of the model's output on the degraded LR (padding cropped
    off), as the 8-bit image a user gets: an int8 model's [0, 1] output already lies on the 1/255
    grid, so comparing it in float with an unrounded fp32 output would charge int8 alone for the
    rounding that writing the fp32 result also does."""
    from restorekit.core.metrics import psnr

    return float(np.mean([psnr(np.round(np.clip(run(lr)[0].transpose(1, 2, 0), 0, 1)[:GT_HR, :GT_HR] * 255) / 255, hr)
                          for lr, hr in pairs]))


def open_session(target: str, conv):
    """A 2-thread runtime session on a converted file."""
    from restorekit.build.convert import open_converted

    return open_converted(target, conv, threads=THREADS)


def outputs(run, crops) -> list[np.ndarray]:
    """HxWxC outputs clipped to [0, 1] (what reaches the user)."""
    return [np.clip(run(c)[0].transpose(1, 2, 0), 0, 1) for c in crops]


def fidelity(outs, refs) -> dict:
    """PSNR mean / worst and SSIM mean of ``outs`` against ``refs``."""
    from restorekit.core.metrics import psnr, ssim

    ps = [psnr(o, r) for o, r in zip(outs, refs)]
    return {"psnr_mean": float(np.mean(ps)), "psnr_worst": float(np.min(ps)),
            "ssim_mean": float(np.mean([ssim(o, r) for o, r in zip(outs, refs)]))}


def latency(ref, cand, x: np.ndarray, runs: int) -> tuple[float, float]:
    """Median ms of ``ref`` and ``cand`` on ``x``, runs interleaved (``eval.fidelity``)."""
    from restorekit.eval.fidelity import latency_side_by_side

    t0 = time.perf_counter()
    cand.run(x)
    t1 = time.perf_counter()
    ref.run(x)
    if (t1 - t0) > SLOW * (time.perf_counter() - t1):  # far slower than fp32 (16-bit on LiteRT): fewer runs
        runs = min(runs, 3)
    (cand_p50, _), (ref_p50, _) = latency_side_by_side(cand, ref, x, runs=runs, warmup=1)
    return ref_p50, cand_p50


def size_kib(path: Path) -> float:
    """File size, or total size of a directory (.mlpackage), in KiB."""
    files = [path] if path.is_file() else [f for f in path.rglob("*") if f.is_file()]
    return sum(f.stat().st_size for f in files) / 1024


def naive_qdq(fp32_path: Path, out: Path, calib: list[np.ndarray]) -> Path:
    """ORT quantize_static (QDQ, per-channel, QUInt8 acts, QInt8 weights, MinMax), no preparation."""
    import onnx
    from onnxruntime import quantization as q

    from restorekit.core.quiet import captured_native_output

    from restorekit.quantize.onnx import TileReader

    name = onnx.load(str(fp32_path)).graph.input[0].name
    with captured_native_output():  # ORT's "consider pre-processing" warnings
        q.quantize_static(str(fp32_path), str(out), TileReader(name, calib), quant_format=q.QuantFormat.QDQ, per_channel=True,
                          activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax)
    return out


def backend_row(target: str, scheme: str, convert, base: dict, calib, crops, work: Path) -> dict:
    """Fidelity and speed of one ONNX / TFLite scheme against the fp32 model of the same backend."""
    if scheme == "fp32":
        return {"conv": base["conv"], **fidelity(base["outs"], base["torch"]), "gt_psnr": base["gt"],
                "note": "PSNR vs PyTorch fp32; timed against itself (noise)", "sess": base["sess"]}
    extra = {}
    if scheme == NAIVE:  # what a user gets today: the plain export (PRelu, no edge rewrite) + quantize_static
        from restorekit.convert import onnx as onnx_converter

        (work / "plain").mkdir(parents=True, exist_ok=True)
        plain = onnx_converter.convert(base["model"], base["spec"], work / "plain" / "model.onnx", precision="fp32",
                                       tile=TILE, calib=None, recipe=None)
        path = naive_qdq(plain.path, work / "naive.onnx", calib)
        conv = dataclasses.replace(plain, path=path, recipe=None)
        extra = {"ref_sess": open_session(target, plain),
                 "note": "plain export (no edge rewrite) + quantize_static; speed-up vs that plain fp32 export"}
    else:
        conv = convert(scheme)
    sess = open_session(target, conv)
    gt = gt_psnr(sess.run, base["pairs"]) if base["pairs"] else None
    return {"conv": conv, "sess": sess, **fidelity(outputs(sess.run, crops), base["outs"]), "gt_psnr": gt,
            "gt_delta": None if gt is None else gt - base["gt"], **extra}


def coreml_row(model, conv, torch_refs, crops, pairs=(), torch_gt=None) -> dict:
    """Simulated fidelity of a Core ML model (PyTorch with the decompressed weights, or the
    fake-quantized w8a8 model the program was converted from)."""
    import torch

    from restorekit.quantize.coreml import with_weights

    if conv.simulation is not None:  # w8a8: the finalized fake-quantized PyTorch model
        sim, note = conv.simulation, "simulated in PyTorch (coremltools fake-quantized w8a8, fp32 math)"
    elif conv.decompressed_weights:
        sim, replaced = with_weights(model, conv.decompressed_weights)
        note = f"simulated in PyTorch ({replaced} weights replaced)"
    else:
        return {"conv": conv, "note": "reference (PyTorch fp32)" if (conv.recipe or {}).get("scheme") == "fp32"
                else "not simulated: no compressed weights (runtime is macOS-only)"}
    run = lambda x: sim(torch.from_numpy(x)).numpy()  # noqa: E731
    with torch.inference_mode():
        fid = fidelity(outputs(run, crops), torch_refs)
        gt = gt_psnr(run, pairs) if pairs else None
    return {"conv": conv, **fid, "gt_psnr": gt, "gt_delta": None if gt is None else gt - torch_gt, "note": note}


def timed_row(row: dict, measure) -> dict:
    """Run ``measure()`` (which fills ``row``); a failure keeps its first line as the row's error.
    Adds the seconds taken and prints the row's progress line."""
    t0 = time.perf_counter()
    try:
        measure()
    except Exception as exc:
        row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    row["seconds"] = round(time.perf_counter() - t0, 1)
    print(progress(row), file=sys.stderr, flush=True)
    return row


def bench_target(loaded, target: str, schemes: list[str], calib, crops, runs: int, work: Path,
                 pairs=(), finetune_steps: int = 300) -> list[dict]:
    """All rows of one model on one target (a failed row keeps its error message)."""
    import torch

    from restorekit.build.convert import convert_model

    from restorekit.core.targets import TARGETS

    model, spec = loaded.module, loaded.spec
    todo = ([s for s in schemes if s in TARGETS[target].precisions or s == FINETUNED]
            + ([NAIVE] if target == "onnx" else []))

    def convert(scheme: str):
        from restorekit.quantize.recipe import recipe_from_dict

        (work / scheme).mkdir(parents=True, exist_ok=True)
        recipe = recipe_from_dict({"scheme": "w8a8", "finetune": {"steps": finetune_steps}}) if scheme == FINETUNED else None
        return convert_model(model, spec, target, work / scheme, precision="w8a8" if recipe else scheme, tile=TILE,
                             calib=calib, recipe=recipe)

    with torch.inference_mode():
        run_torch = lambda x: model(torch.from_numpy(x)).numpy()  # noqa: E731
        base = {"torch": outputs(run_torch, crops), "pairs": list(pairs), "model": model, "spec": spec,
                "torch_gt": gt_psnr(run_torch, pairs) if pairs else None}
    if target != "coreml":  # the fp32 model of the same backend is every row's reference
        try:
            base["conv"] = convert("fp32")
            base["sess"] = open_session(target, base["conv"])
            base["outs"] = outputs(base["sess"].run, crops)
            base["gt"] = gt_psnr(base["sess"].run, pairs) if pairs else None
        except Exception as exc:
            base["error"] = f"fp32 reference failed: {exc}"
    rows = []
    for scheme in todo:
        row = {"model": spec.name, "target": target, "scheme": scheme}

        def measure(row=row, scheme=scheme):
            if "error" in base:
                raise RuntimeError(base["error"])
            if target == "coreml":
                res = coreml_row(model, convert(scheme), base["torch"], crops, pairs, base["torch_gt"])
            else:
                res = backend_row(target, scheme, convert, base, calib, crops, work)
                ms_ref, ms = latency(res.pop("ref_sess", base["sess"]), res.pop("sess"), crops[0], runs)
                res.update(fp32_ms=ms_ref, ms=ms, speedup=ms_ref / ms)
            conv = res.pop("conv")
            search = (conv.recipe or {}).get("mixed_search") or {}
            row.update(res, size_kib=size_kib(conv.path), float_layers=search.get("float_layers"))
            if search:  # the budget is checked on the calibration tiles; the row's PSNR is held-out
                row["note"] = (f"search on the calibration tiles: {search['psnr_db_on_calibration']:.2f} dB, budget "
                               f"{search['budget_psnr_db']:g} {'met' if search['met'] else 'NOT met'}")

        rows.append(timed_row(row, measure))
    return rows


def fmt(v, spec: str = ".2f", unit: str = "") -> str:
    """A number (with its unit), or a dash for none."""
    return "—" if v is None else format(v, spec) + unit


def progress(r: dict) -> str:
    """One line per finished row."""
    head = f"[{r['model']}] {r['target']}-{r['scheme']}:"
    if "error" in r:
        return f"{head} ERROR {r['error']}"
    return (f"{head} PSNR {fmt(r.get('psnr_mean'))} / {fmt(r.get('psnr_worst'))} dB, speed-up "
            f"{fmt(r.get('speedup'), '.2f', 'x')}, {fmt(r.get('size_kib'), '.0f')} KiB ({r['seconds']} s)")


def calibration_sweep(loaded, target: str, counts: list[int], crops, work: Path) -> list[dict]:
    """w8a8 fidelity vs the same backend's fp32 for each calibration-set size (one model, one target)."""
    from restorekit.build.convert import convert_model

    model, spec = loaded.module, loaded.spec
    (work / "fp32").mkdir(parents=True, exist_ok=True)
    try:
        ref = outputs(open_session(target, convert_model(model, spec, target, work / "fp32", "fp32", TILE)).run, crops)
    except Exception as exc:  # every row of the sweep carries the error; the report is still written
        ref, failed = None, f"fp32 reference failed: {(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]}"
    rows = []
    for n in counts:
        row = {"model": spec.name, "target": target, "scheme": f"w8a8 calib {n}", "calib_count": n}

        def measure(row=row, n=n):
            if ref is None:
                raise RuntimeError(failed)
            (work / f"c{n}").mkdir(parents=True, exist_ok=True)
            conv = convert_model(model, spec, target, work / f"c{n}", "w8a8", TILE, calib=calibration(n))
            row.update(fidelity(outputs(open_session(target, conv).run, crops), ref))

        rows.append(timed_row(row, measure))
    return rows


def merge(earlier: list[dict], new: list[dict], key) -> list[dict]:
    """``earlier`` rows (a previous ``--json``) with each one measured again (same ``key(row)``)
    replaced in place by the new one; new rows of other keys go after their target's rows."""
    fresh = {key(r): r for r in new}
    out = [fresh.pop(key(r), r) for r in earlier]
    for r in new:  # rows no earlier run had: after the last row of the same model and target
        if key(r) in fresh:
            at = max((i + 1 for i, o in enumerate(out) if (o["model"], o["target"]) == (r["model"], r["target"])),
                     default=len(out))
            out.insert(at, fresh.pop(key(r)))
    return out


def markdown(rows: list[dict], args, n_calib: int, n_eval: int, sweeps: list[dict] = (), n_gt: int = 0) -> str:
    """The report: a header, then one table per model."""
    lines = ["# Quantization benchmark", "",
             f"- date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}",
             f"- CPU count: {os.cpu_count()}, runtime threads: {THREADS}",
             f"- command: `{shlex.join(sys.orig_argv)}`",
             *([f"- rows not measured by this command: {args.merged_from}"] if args.merge else []),
             f"- calibration: {n_calib} tiles of {TILE}x{TILE} from {', '.join(map(str, CALIB_DIRS))}",
             f"- held-out evaluation: {n_eval} centre crops of {TILE}x{TILE} from "
             f"{', '.join(map(str, EVAL_DIRS))}; outputs clipped to [0, 1]",
             f"- PSNR/SSIM vs the fp32 model of the same backend (fp32 rows: vs PyTorch fp32; coreml: "
             f"PyTorch with decompressed weights vs PyTorch fp32); speed-up = fp32 ms / scheme ms at "
             f"{TILE}x{TILE}, median of {args.runs} interleaved runs (3 for a scheme over {SLOW}x slower than fp32)",
             f"- quality vs ground truth: {n_gt} held-out {GT_HR}x{GT_HR} photo crops degraded by the second-order "
             f"pipeline (`restorekit.degrade.synthetic.degrade_pair`, seed 0) to {GT_HR}/scale, the input padded to "
             f"{TILE}x{TILE}; outputs rounded to 8 bits as written; Δ = PSNR vs GT of the scheme minus that of the fp32 "
             "model of the same backend", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "",
                  "| target-scheme | PSNR mean (dB) | PSNR worst (dB) | SSIM mean | speed-up | ms (fp32 → scheme) "
                  "| PSNR vs GT (dB) | Δ vs fp32 (dB) | size (KiB) | float layers | note |",
                  "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["model"] == model):
            name = f"{r['target']}-{r['scheme']}"
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'].replace('|', '/')} | | | | | | | | | |")
                continue
            ms = f"{r['fp32_ms']:.1f} → {r['ms']:.1f}" if "ms" in r else "—"
            fl = r.get("float_layers")
            floats = "—" if fl is None else (", ".join(fl) or "none")
            lines.append(f"| {name} | {fmt(r.get('psnr_mean'))} | {fmt(r.get('psnr_worst'))} | "
                         f"{fmt(r.get('ssim_mean'), '.4f')} | {fmt(r.get('speedup'), '.2f', 'x')} | {ms} | "
                         f"{fmt(r.get('gt_psnr'))} | {fmt(r.get('gt_delta'), '+.3f')} | "
                         f"{fmt(r.get('size_kib'), '.0f')} | {floats} | {r.get('note', '')} |")
        lines.append("")
        sweep = [r for r in sweeps if r["model"] == model]
        if sweep:
            counts = sorted({r["calib_count"] for r in sweep})
            lines += ["Calibration-set sensitivity (w8a8, held-out PSNR mean / worst vs fp32 of the same backend, "
                      "by number of calibration tiles):", "",
                      "| target | " + " | ".join(f"{c} tiles" for c in counts) + " |",
                      "|---|" + "---|" * len(counts)]
            for target in dict.fromkeys(r["target"] for r in sweep):
                cells = {r["calib_count"]: ("error" if "error" in r else
                                            f"{r['psnr_mean']:.2f} / {r['psnr_worst']:.2f}")
                         for r in sweep if r["target"] == target}
                lines.append(f"| {target} | " + " | ".join(cells.get(c, "—") for c in counts) + " |")
            lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="compact,builtin", help="compact, builtin, or checkpoint paths")
    ap.add_argument("--targets", default="onnx,tflite,coreml")
    ap.add_argument("--schemes", default=f"fp32,fp16,w8,w8a8,{FINETUNED},w8a16,mixed,palettize6")
    ap.add_argument("--finetune-steps", type=int, default=1200, help=f"training steps of the {FINETUNED} rows")
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--eval-count", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--gt-count", type=int, default=24, help="degraded/clean pairs for quality vs ground truth "
                    "(at most one per held-out photo with a side of 512 or more: 19 here)")
    ap.add_argument("--calib-sweep", default="2,8,32", help="calibration-tile counts for the w8a8 sensitivity "
                    "table on onnx and tflite ('' to skip)")
    ap.add_argument("--out", default=str(ROOT / "docs" / "experiments" / "quantization_bench.md"))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    ap.add_argument("--merge", default=None, help="a previous run's --json: its rows are kept, except those "
                    "(model, target, scheme; sweeps: model, target, tile count) measured in this run, which replace them")
    ap.add_argument("--merged-from", default="an earlier run", help="what --merge is (its command and date), "
                    "for the report's header")
    args = ap.parse_args()
    missing = [str(d) for d in [SHARED, *CALIB_DIRS, *EVAL_DIRS] if not d.is_dir()]
    if missing:
        print(f"error: shared data not found ({', '.join(missing)}): this benchmark needs the weights and "
              f"photos under {SHARED}", file=sys.stderr)
        return 2
    from restorekit.models.loader import load_model

    calib, crops = calibration(args.calib_count), eval_crops(args.eval_count)
    rows, sweeps, n_gt = [], [], 0
    counts = [int(c) for c in args.calib_sweep.split(",") if c.strip()]
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        for name in args.models.split(","):
            try:
                loaded = load_model(MODELS.get(name, name))
            except Exception as exc:
                rows.append({"model": name, "target": "load", "scheme": "model", "error": str(exc).splitlines()[0]})
                print(progress({**rows[-1], "seconds": 0}), file=sys.stderr, flush=True)
                continue
            pairs = gt_pairs(args.gt_count, loaded.spec.scale)
            n_gt = len(pairs)
            for target in args.targets.split(","):
                rows += bench_target(loaded, target, args.schemes.split(","), calib, crops, args.runs,
                                     Path(tmp) / name / target, pairs, args.finetune_steps)
                if counts and target in ("onnx", "tflite"):
                    sweeps += calibration_sweep(loaded, target, counts, crops, Path(tmp) / name / f"{target}-sweep")
    if args.merge:
        earlier = json.loads(Path(args.merge).read_text())
        rows = merge([r for r in earlier if "calib_count" not in r], rows, lambda r: (r["model"], r["target"], r["scheme"]))
        sweeps = merge([r for r in earlier if "calib_count" in r], sweeps,
                       lambda r: (r["model"], r["target"], r["calib_count"]))
    for path, text in ((args.out, markdown(rows, args, len(calib), len(crops), sweeps, n_gt)),
                       (args.json, args.json and json.dumps(rows + sweeps, indent=1, default=str))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(f"{path}.tmp").write_text(text)
            os.replace(f"{path}.tmp", path)
    print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
