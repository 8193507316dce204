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

SHARED = Path("/work/shared")
MODELS = {"compact": SHARED / "weights" / "realesr-animevideov3.pth", "builtin": None}
CALIB_DIRS = [ROOT / "sample_images", SHARED / "photos" / "old"]
EVAL_DIRS = [SHARED / "photos" / d for d in ("bw", "faces", "whole")]
TILE = 256  # conversion tile (TFLite's static input), calibration tiles, eval crops, timing input
THREADS = 2
NAIVE = "ort-qdq-naive"


def calibration(count: int) -> list[np.ndarray]:
    """``count`` calibration tiles spread over the calibration folders."""
    from restorekit.quantize.calibration import calibration_tiles

    k = len(CALIB_DIRS)
    counts = [count // k + (i < count % k) for i in range(k)]
    return [t for i, (d, n) in enumerate(zip(CALIB_DIRS, counts)) if n
            for t in calibration_tiles(d, tile=TILE, count=n, seed=i)]


def eval_crops(count: int) -> list[np.ndarray]:
    """Centre crops (NCHW, padded if small) of held-out photos, taken in turn from each folder."""
    from restorekit.runtime.image import list_images, read_image
    from restorekit.runtime.tiling import pad_to

    paths = [p for row in zip_longest(*[list_images(d) for d in EVAL_DIRS]) for p in row if p is not None]
    crops = []
    for p in paths[:count]:
        img = pad_to(read_image(p).rgb, TILE, TILE)
        y, x = (img.shape[0] - TILE) // 2, (img.shape[1] - TILE) // 2
        crops.append(np.ascontiguousarray(img[y : y + TILE, x : x + TILE].transpose(2, 0, 1)[None], np.float32))
    return crops


def open_session(target: str, conv):
    """A 2-thread runtime session on a converted file."""
    from restorekit.convert import open_converted

    return open_converted(target, conv, threads=THREADS)


def outputs(run, crops) -> list[np.ndarray]:
    """HxWxC outputs clipped to [0, 1] (what reaches the user)."""
    return [np.clip(run(c)[0].transpose(1, 2, 0), 0, 1) for c in crops]


def fidelity(outs, refs) -> dict:
    """PSNR mean / worst and SSIM mean of ``outs`` against ``refs``."""
    from restorekit.eval.metrics import psnr, ssim

    ps = [psnr(o, r) for o, r in zip(outs, refs)]
    return {"psnr_mean": float(np.mean(ps)), "psnr_worst": float(np.min(ps)),
            "ssim_mean": float(np.mean([ssim(o, r) for o, r in zip(outs, refs)]))}


def latency(ref, cand, x: np.ndarray, runs: int) -> tuple[float, float]:
    """Median ms of ``ref`` and ``cand`` on ``x``, runs interleaved (``eval.fidelity``)."""
    from restorekit.eval.fidelity import latency_side_by_side

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

    from restorekit.quiet import captured_native_output

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
        return {"conv": base["conv"], **fidelity(base["outs"], base["torch"]),
                "note": "PSNR vs PyTorch fp32; timed against itself (noise)", "sess": base["sess"]}
    if scheme == NAIVE:
        path = naive_qdq(base["conv"].path, work / "naive.onnx", calib)
        conv = dataclasses.replace(base["conv"], path=path, recipe=None)
    else:
        conv = convert(scheme)
    sess = open_session(target, conv)
    return {"conv": conv, "sess": sess, **fidelity(outputs(sess.run, crops), base["outs"])}


def coreml_row(model, conv, torch_refs, crops) -> dict:
    """Simulated fidelity (PyTorch with the decompressed weights) of a Core ML model."""
    import torch

    from restorekit.quantize.coreml import with_weights

    if not conv.decompressed_weights:
        return {"conv": conv, "note": "reference (PyTorch fp32)" if (conv.recipe or {}).get("scheme") == "fp32"
                else "not simulated: no compressed weights (runtime is macOS-only)"}
    sim, replaced = with_weights(model, conv.decompressed_weights)
    with torch.inference_mode():
        fid = fidelity(outputs(lambda x: sim(torch.from_numpy(x)).numpy(), crops), torch_refs)
    return {"conv": conv, **fid, "note": f"simulated in PyTorch ({replaced} weights replaced)"}


def bench_target(loaded, target: str, schemes: list[str], calib, crops, runs: int, work: Path) -> list[dict]:
    """All rows of one model on one target (a failed row keeps its error message)."""
    import torch

    from restorekit.convert import TARGETS, convert_model

    model, spec = loaded.module, loaded.spec
    todo = [s for s in schemes if s in TARGETS[target].precisions] + ([NAIVE] if target == "onnx" else [])

    def convert(scheme: str):
        (work / scheme).mkdir(parents=True, exist_ok=True)
        return convert_model(model, spec, target, work / scheme, precision=scheme, tile=TILE, calib=calib)

    with torch.inference_mode():
        base = {"torch": outputs(lambda x: model(torch.from_numpy(x)).numpy(), crops)}
    if target != "coreml":  # the fp32 model of the same backend is every row's reference
        try:
            base["conv"] = convert("fp32")
            base["sess"] = open_session(target, base["conv"])
            base["outs"] = outputs(base["sess"].run, crops)
        except Exception as exc:
            base["error"] = f"fp32 reference failed: {exc}"
    rows = []
    for scheme in todo:
        row, t0 = {"model": spec.name, "target": target, "scheme": scheme}, time.perf_counter()
        try:
            if "error" in base:
                raise RuntimeError(base["error"])
            if target == "coreml":
                res = coreml_row(model, convert(scheme), base["torch"], crops)
            else:
                res = backend_row(target, scheme, convert, base, calib, crops, work)
                ms_ref, ms = latency(base["sess"], res.pop("sess"), crops[0], runs)
                res.update(fp32_ms=ms_ref, ms=ms, speedup=ms_ref / ms)
            conv = res.pop("conv")
            row.update(res, size_kib=size_kib(conv.path),
                       float_layers=((conv.recipe or {}).get("mixed_search") or {}).get("float_layers"))
        except Exception as exc:
            row["error"] = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        row["seconds"] = round(time.perf_counter() - t0, 1)
        rows.append(row)
        print(progress(row), file=sys.stderr, flush=True)
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


def markdown(rows: list[dict], args, n_calib: int, n_eval: int) -> str:
    """The report: a header, then one table per model."""
    lines = ["# Quantization benchmark", "",
             f"- date (UTC): {datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M:%S')}",
             f"- CPU count: {os.cpu_count()}, runtime threads: {THREADS}",
             f"- command: `{shlex.join(sys.orig_argv)}`",
             f"- calibration: {n_calib} tiles of {TILE}x{TILE} from {', '.join(map(str, CALIB_DIRS))}",
             f"- held-out evaluation: {n_eval} centre crops of {TILE}x{TILE} from "
             f"{', '.join(map(str, EVAL_DIRS))}; outputs clipped to [0, 1]",
             f"- PSNR/SSIM vs the fp32 model of the same backend (fp32 rows: vs PyTorch fp32; coreml: "
             f"PyTorch with decompressed weights vs PyTorch fp32); speed-up = fp32 ms / scheme ms at "
             f"{TILE}x{TILE}, median of {args.runs} interleaved runs", ""]
    for model in dict.fromkeys(r["model"] for r in rows):
        lines += [f"## {model}", "",
                  "| target-scheme | PSNR mean (dB) | PSNR worst (dB) | SSIM mean | speed-up | ms (fp32 → scheme) "
                  "| size (KiB) | float layers | note |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for r in (r for r in rows if r["model"] == model):
            name = f"{r['target']}-{r['scheme']}"
            if "error" in r:
                lines.append(f"| {name} | error: {r['error'].replace('|', '/')} | | | | | | | |")
                continue
            ms = f"{r['fp32_ms']:.1f} → {r['ms']:.1f}" if "ms" in r else "—"
            fl = r.get("float_layers")
            floats = "—" if fl is None else (", ".join(fl) or "none")
            lines.append(f"| {name} | {fmt(r.get('psnr_mean'))} | {fmt(r.get('psnr_worst'))} | "
                         f"{fmt(r.get('ssim_mean'), '.4f')} | {fmt(r.get('speedup'), '.2f', 'x')} | {ms} | "
                         f"{fmt(r.get('size_kib'), '.0f')} | {floats} | {r.get('note', '')} |")
        lines.append("")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="compact,builtin", help="compact, builtin, or checkpoint paths")
    ap.add_argument("--targets", default="onnx,tflite,coreml")
    ap.add_argument("--schemes", default="fp32,fp16,w8,w8a8,w8a16,mixed,palettize6")
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--eval-count", type=int, default=8)
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--out", default=str(ROOT / "docs" / "quantization_bench.md"))
    ap.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = ap.parse_args()
    missing = [str(d) for d in [SHARED, *CALIB_DIRS, *EVAL_DIRS] if not d.is_dir()]
    if missing:
        print(f"error: shared data not found ({', '.join(missing)}): this benchmark needs the weights and "
              f"photos under {SHARED}", file=sys.stderr)
        return 2
    from restorekit.models.loader import load_model

    calib, crops = calibration(args.calib_count), eval_crops(args.eval_count)
    rows = []
    with tempfile.TemporaryDirectory(prefix="qbench-") as tmp:
        for name in args.models.split(","):
            try:
                loaded = load_model(MODELS.get(name, name))
            except Exception as exc:
                rows.append({"model": name, "target": "load", "scheme": "model", "error": str(exc).splitlines()[0]})
                print(progress({**rows[-1], "seconds": 0}), file=sys.stderr, flush=True)
                continue
            for target in args.targets.split(","):
                rows += bench_target(loaded, target, args.schemes.split(","), calib, crops, args.runs,
                                     Path(tmp) / name / target)
    for path, text in ((args.out, markdown(rows, args, len(calib), len(crops))),
                       (args.json, args.json and json.dumps(rows, indent=1, default=str))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(f"{path}.tmp").write_text(text)
            os.replace(f"{path}.tmp", path)
    print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
