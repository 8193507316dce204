"""Where ONNX Runtime spends its time in a bundle, by op type and by node, and what a PReLU and a
narrow conv cost.

    python benchmarks/ort_op_profile.py bundles/realesr-animevideov3/onnx-int8/model.onnx

1. Runs the model (random 256x256 input, 2 threads, ORT's profiler) and prints each op type's
   share of the kernel time, then the slowest nodes (median kernel ms per run).
2. Times one per-channel PReLU on a 1x64x256x256 tensor (Real-ESRGAN Compact's shape) written
   three ways that compute the same values: ``PRelu``, ``Max(x, Mul(x, a))`` and
   ``a*x + (1-a)*Relu(x)``.
3. Times a 48 -> N 3x3 conv on 1x48x256x256 in fp32 and as uint8/int8 QDQ, for several N: ORT's
   int8 conv is slow below 16 output channels (why ``quantize.onnx`` pads narrow convs).
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
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # the sessions run one after another
    if profile_dir:
        opts.enable_profiling = True
        opts.profile_file_prefix = str(Path(profile_dir) / "ort")
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def op_shares(model_path: Path, size: int, runs: int, threads: int) -> tuple[list, list]:
    """``(op type, share of kernel time)`` largest first, and ``(node, op type, median kernel ms)``
    slowest first, over ``runs`` runs after one warm-up."""
    with tempfile.TemporaryDirectory() as tmp:
        sess = session(str(model_path), threads, tmp)
        inp = sess.get_inputs()[0]
        x = np.random.default_rng(0).random((1, 3, size, size), dtype=np.float32)
        for _ in range(runs + 1):
            sess.run(None, {inp.name: x})
        events = json.loads(Path(sess.end_profiling()).read_text())
    total: collections.Counter = collections.Counter()
    per_node: dict[tuple[str, str], list[float]] = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            total[e["args"]["op_name"]] += e["dur"]
            per_node[(e["name"][: -len("_kernel_time")], e["args"]["op_name"])].append(e["dur"])
    whole = sum(total.values()) or 1
    nodes = sorted(((n, op, statistics.median(d) / 1000) for (n, op), d in per_node.items()), key=lambda r: -r[2])
    return [(op, v / whole) for op, v in total.most_common()], nodes


def conv_width_times(widths: list[int], size: int, threads: int, channels: int = 48, runs: int = 20) -> dict:
    """``{N: (fp32 ms, int8 ms)}``: median time of a ``channels`` -> N 3x3 conv on
    1 x channels x size x size, as an fp32 model and as ORT's static uint8/int8 QDQ of it."""
    import logging

    from onnx import TensorProto, helper, numpy_helper
    from onnxruntime import quantization as q

    logging.getLogger().setLevel(logging.ERROR)  # quantize_static's "consider pre-processing" advice
    rng = np.random.default_rng(0)
    x = rng.random((1, channels, size, size), dtype=np.float32)

    class Reader(q.CalibrationDataReader):
        def __init__(self):
            self.items = iter([{"x": x}])

        def get_next(self):
            return next(self.items, None)

    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in widths:
            w = numpy_helper.from_array((rng.standard_normal((n, channels, 3, 3)) * 0.05).astype(np.float32), "w")
            b = numpy_helper.from_array(np.zeros(n, np.float32), "b")
            graph = helper.make_graph(
                [helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1, 1, 1, 1])], "conv",
                [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, channels, size, size])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n, size, size])], [w, b])
            model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
            model.ir_version = 8
            fp32, int8 = Path(tmp) / f"conv{n}.onnx", Path(tmp) / f"conv{n}_int8.onnx"
            fp32.write_bytes(model.SerializeToString())
            q.quantize_static(str(fp32), str(int8), Reader(), quant_format=q.QuantFormat.QDQ, per_channel=True,
                              activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8)
            times = []
            for path in (fp32, int8):
                sess = session(str(path), threads)
                for _ in range(3):
                    sess.run(None, {"x": x})
                t = []
                for _ in range(runs):
                    t0 = time.perf_counter()
                    sess.run(None, {"x": x})
                    t.append(time.perf_counter() - t0)
                times.append(1000 * statistics.median(t))
            out[n] = tuple(times)
    return out


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
    ap.add_argument("--nodes", type=int, default=12, help="how many of the slowest nodes to list (default 12)")
    ap.add_argument("--conv-widths", default="12,16,24,48",
                    help="output channels of the 48 -> N conv timed in fp32 and int8 ('' skips it)")
    args = ap.parse_args()
    shares, nodes = op_shares(args.model, args.size, args.runs, args.threads)
    print(f"{args.model}: share of ORT kernel time by op type ({args.runs} runs at {args.size}x{args.size})")
    for op, share in shares:
        if share >= 0.001:
            print(f"  {op:24s} {100 * share:5.1f}%")
    print("slowest nodes, median kernel ms per run:")
    for name, op, ms in nodes[: args.nodes]:
        print(f"  {ms:7.2f} ms  {op:18s} {name}")
    print(f"one PReLU on 1x64x{args.size}x{args.size}, median of 20 runs:")
    for name, (ms, diff) in prelu_forms(64, args.size, args.threads).items():
        print(f"  {name:24s} {ms:6.2f} ms   max |diff| to PRelu {diff:.1e}")
    if args.conv_widths:
        widths = [int(w) for w in args.conv_widths.split(",")]
        print(f"a 48 -> N 3x3 conv on 1x48x{args.size}x{args.size}, median of 20 runs (fp32 / uint8-int8 QDQ):")
        for n, (f, i) in conv_width_times(widths, args.size, args.threads).items():
            print(f"  N = {n:3d}   fp32 {f:6.2f} ms   int8 {i:6.2f} ms   int8 speed-up {f / i:4.2f}x")


if __name__ == "__main__":
    main()
