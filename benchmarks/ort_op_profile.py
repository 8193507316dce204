"""Where ONNX Runtime spends its time in a bundle, by op type, and what a PReLU costs in its forms.

    python benchmarks/ort_op_profile.py bundles/realesr-animevideov3/onnx-int8/model.onnx

1. Runs the model (random 256x256 input, 2 threads, ORT's profiler) and prints each op type's
   share of the kernel time.
2. Times one per-channel PReLU on a 1x64x256x256 tensor (Real-ESRGAN Compact's shape) written
   three ways that compute the same values: ``PRelu``, ``Max(x, Mul(x, a))`` and
   ``a*x + (1-a)*Relu(x)``.
"""

from __future__ import annotations

import argparse
import collections
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def session(model, threads: int, profile_dir: str | None = None):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    if profile_dir:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "ort")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def op_shares(model_path: Path, size: int, runs: int, threads: int) -> list[tuple[str, float]]:
    """(op type, share of kernel time) over ``runs`` runs after one warm-up, largest first."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(str(model_path), threads, tmp)
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        for _ in range(runs + 1):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
    whole = sum(total.values()) or 1
    return [(op, v / whole) for op, v in total.most_common()]


def prelu_forms(channels: int, size: int, threads: int, runs: int = 20) -> dict[str, float]:
    """Median ms of one PReLU in three equivalent ONNX forms, and their max difference to PRelu."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    a = (rng.random((channels, 1, 1)) * 0.5).astype(np.float32)
    forms = {
        "PRelu": [helper.make_node("PRelu", ["x", "a"], ["y"])],
        "Max(x, Mul(x, a))": [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Max", ["x", "ax"], ["y"])],
        "a*x + (1-a)*Relu(x)": [helper.make_node("Mul", ["x", "a"], ["ax"]), helper.make_node("Relu", ["x"], ["r"]),
                                helper.make_node("Mul", ["r", "b"], ["br"]), helper.make_node("Add", ["ax", "br"], ["y"])],
    }
    shape = [1, channels, size, size]
    x = rng.standard_normal(shape).astype(np.float32)
    out, ref = {}, None
    for name, nodes in forms.items():
        inits = [numpy_helper.from_array(a, "a"), numpy_helper.from_array((1 - a).astype(np.float32), "b")]
        used = {i for n in nodes for i in n.input}
        graph = helper.make_graph(nodes, "prelu", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                                  [i for i in inits if i.name in used])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = session(model.SerializeToString(), threads)
        y = sess.run(None, {"x": x})[0]
        ref = y if ref is None else ref
        times = []
        for _ in range(runs):
            t0 = time.perf_counter()
            sess.run(None, {"x": x})
            times.append(time.perf_counter() - t0)
        out[name] = (1000 * statistics.median(times), float(np.abs(y - ref).max()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", type=Path, help="an ONNX model (a bundle's model.onnx)")
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    print(f"{args.model}: share of ORT kernel time by op type ({args.runs} runs at {args.size}x{args.size})")
    for op, share in op_shares(args.model, args.size, args.runs, args.threads):
        if share >= 0.001:
            print(f"  {op:24s} {100 * share:5.1f}%")
    print(f"one PReLU on 1x64x{args.size}x{args.size}, median of 20 runs:")
    for name, (ms, diff) in prelu_forms(64, args.size, args.threads).items():
        print(f"  {name:24s} {ms:6.2f} ms   max |diff| to PRelu {diff:.1e}")


if __name__ == "__main__":
    main()
