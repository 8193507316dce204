"""Independent check of an int8 ONNX bundle against the fp32 bundle of the same model.

Uses onnxruntime, numpy and Pillow only (none of restorekit's runtime): each bundle's
``manifest.json`` is read for the input name and its checksum is verified, then both
``model.onnx`` files run on centre crops of photos that were not used for calibration. Prints
PSNR of int8 vs fp32 (outputs clipped to [0, 1]; mean, worst) and the speed-up of int8 over fp32
(median of interleaved runs at the crop size, same session options for both; with ``--repeats
R`` the timing is done R times in a row and the spread of the speed-up across blocks is printed).
It also runs the int8 model with every graph optimization off, which leaves its QDQ nodes unfused
(DequantizeLinear, float Conv, QuantizeLinear): the values the graph defines, without ONNX
Runtime's integer kernels. The PSNR of the int8 kernels against that shows whether this CPU's
kernels compute what the graph says (on x86 without VNNI, ORT's u8s8 kernels use VPMADDUBSW,
whose 16-bit sums can saturate: then this figure drops).

    python benchmarks/onnx_int8_check.py bundles/realesr-animevideov3/onnx-fp32 \\
        bundles/realesr-animevideov3/onnx-int8 ../shared/photos/bw ../shared/photos/faces ...
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


def open_bundle(folder: Path, threads: int, optimize: bool = True):
    """An onnxruntime session on the bundle's model, after checking its sha256 against the manifest."""
    import onnxruntime as ort

    manifest = json.loads((folder / "manifest.json").read_text())
    model = folder / "model.onnx"
    digest = hashlib.sha256(model.read_bytes()).hexdigest()
    recorded = {f["path"]: f["sha256"] for f in manifest.get("files", [])}
    if recorded.get("model.onnx") != digest:
        sys.exit(f"{model}: sha256 {digest[:12]}... is not the one in {folder / 'manifest.json'}")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    # no spin-waiting after a run: the two sessions are timed interleaved, and one session's
    # spinning threads slow the other down (measured on 2 cores: fp32 89 vs 57 ms, int8 49 vs 27 ms)
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if not optimize:  # QDQ nodes run one by one, in float: the graph's own values
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    return sess, sess.get_inputs()[0].name, manifest


def centre_crop(path: Path, size: int) -> np.ndarray:
    """An RGB photo's centre ``size`` x ``size`` crop (edge-padded when smaller), NCHW float32 in [0, 1]."""
    from PIL import Image

    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    h, w = rgb.shape[:2]
    rgb = np.pad(rgb, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="edge")
    h, w = rgb.shape[:2]
    y, x = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(rgb[y:y + size, x:x + size].transpose(2, 0, 1)[None])


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((np.clip(a, 0, 1) - np.clip(b, 0, 1)) ** 2))
    return 100.0 if mse == 0 else -10.0 * np.log10(mse)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path, help="the fp32 ONNX bundle folder")
    ap.add_argument("int8", type=Path, help="the int8 ONNX bundle folder")
    ap.add_argument("photos", type=Path, nargs="+", help="folders of held-out photos")
    ap.add_argument("--size", type=int, default=256, help="centre-crop side (default 256)")
    ap.add_argument("--runs", type=int, default=10, help="interleaved timing runs (default 10)")
    ap.add_argument("--repeats", type=int, default=1,
                    help="timing blocks of --runs each; the speed-up of every block is reported (default 1)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    (ref, ref_in, _), (q, q_in, manifest) = (open_bundle(b, args.threads) for b in (args.fp32, args.int8))
    graph, graph_in, _ = open_bundle(args.int8, args.threads, optimize=False)
    files = sorted(p for d in args.photos for p in d.iterdir() if p.suffix.lower() in SUFFIXES)
    if not files:
        sys.exit("no photos found in " + ", ".join(map(str, args.photos)))
    scores, kernels = [], []
    for p in files:
        x = centre_crop(p, args.size)
        y = q.run(None, {q_in: x})[0]
        scores.append((psnr(y, ref.run(None, {ref_in: x})[0]), p))
        kernels.append((psnr(y, graph.run(None, {graph_in: x})[0]), p))
        print(f"{scores[-1][0]:7.2f} dB  (int8 kernels vs the QDQ graph in float: {kernels[-1][0]:6.2f} dB)  {p}",
              file=sys.stderr)
    x = centre_crop(files[0], args.size)
    for sess, name in ((ref, ref_in), (q, q_in)):  # warm-up
        for _ in range(2):
            sess.run(None, {name: x})
    blocks = []
    for _ in range(max(1, args.repeats)):
        t_ref, t_q = [], []
        for _ in range(args.runs):  # interleaved: both sides share whatever load the machine has
            for sess, name, out in ((ref, ref_in, t_ref), (q, q_in, t_q)):
                t0 = time.perf_counter()
                sess.run(None, {name: x})
                out.append(time.perf_counter() - t0)
        blocks.append((statistics.median(t_ref), statistics.median(t_q)))
    ratios = [r / i for r, i in blocks]
    t_ref_all, t_q_all = [r for r, _ in blocks], [i for _, i in blocks]
    worst = min(scores)
    print(json.dumps({
        "photos": len(files), "crop": args.size,
        "psnr_int8_vs_fp32_db": {"mean": round(statistics.mean(s for s, _ in scores), 2),
                                 "worst": round(worst[0], 2), "worst_photo": str(worst[1])},
        "psnr_int8_kernels_vs_qdq_graph_db": {"mean": round(statistics.mean(s for s, _ in kernels), 2),
                                              "worst": round(min(kernels)[0], 2), "worst_photo": str(min(kernels)[1])},
        "speedup_int8_over_fp32": round(statistics.median(ratios), 2),
        "speedup_per_block": [round(r, 2) for r in ratios],
        "ms_fp32_int8": [round(1000 * statistics.median(t_ref_all), 1), round(1000 * statistics.median(t_q_all), 1)],
        "int8_preparation": (manifest.get("recipe") or {}).get("float_preparation"),
    }, indent=1, default=str))


if __name__ == "__main__":
    main()
