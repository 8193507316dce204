"""Where an int8 ONNX bundle clips one photo, and what wider ranges would give.

For every ``QuantizeLinear`` of the int8 model: its range (from scale and zero point), the range of
the float values that reach it on the photo's centre crop (the graph run unfused, in float), and
the share of those values outside the range (clipped). With ``--widen``, the listed tensors'
ranges are scaled by a factor (the zero point kept in place, the step growing with it), and the
int8 model is scored against the fp32 bundle again, on the photo and on ``--also`` photos: does
the clipping cost fidelity, or do the coarser steps cost more?

    python benchmarks/onnx_int8_ranges.py bundles/realesr-animevideov3/onnx-fp32 \\
        bundles/realesr-animevideov3/onnx-int8 PHOTO --widen conv2d:2 --widen 'conv2d*:1.3' --also OTHER.png
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_int8_check import centre_crop, open_bundle, psnr  # noqa: E402


def quantize_nodes(model):
    """(node, rmin, rmax, step) of every QuantizeLinear on an activation, with its initializers."""
    from onnx import numpy_helper

    init = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    out = []
    for n in model.graph.node:
        if n.op_type != "QuantizeLinear" or n.input[0] in init:
            continue
        scale = float(init[n.input[1]])
        zero = int(init[n.input[2]]) if len(n.input) > 2 else 0
        out.append((n, (0 - zero) * scale, (255 - zero) * scale, scale))
    return out


def widened(model, patterns: list[str], factor: float):
    """A copy of ``model`` whose QuantizeLinear ranges on the tensors matching ``patterns`` (shell-style)
    are ``factor`` x wider."""
    import onnx
    from onnx import numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    init = {i.name: i for i in m.graph.initializer}
    for n, lo, hi, _ in quantize_nodes(m):
        if not any(fnmatch.fnmatchcase(n.input[0], p) for p in patterns):
            continue
        step = (hi - lo) * factor / 255
        # the DequantizeLinear nodes after this Q read the same scale / zero-point initializers
        init[n.input[1]].CopyFrom(numpy_helper.from_array(np.array(step, dtype=np.float32), n.input[1]))
        zp = numpy_helper.to_array(init[n.input[2]])
        init[n.input[2]].CopyFrom(numpy_helper.from_array(np.array(round(-lo * factor / step), dtype=zp.dtype),
                                                          n.input[2]))
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path, help="the fp32 ONNX bundle folder")
    ap.add_argument("int8", type=Path, help="the int8 ONNX bundle folder")
    ap.add_argument("photo", type=Path)
    ap.add_argument("--also", type=Path, nargs="*", default=[], help="more photos to score with --widen")
    ap.add_argument("--widen", action="append", default=[], metavar="TENSORS:FACTOR",
                    help="comma-separated tensor names or shell patterns ('conv2d*') and a factor; repeatable")
    ap.add_argument("--size", type=int, default=256)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort

    open_bundle(args.int8, 1)  # verifies the checksum
    model = onnx.load(str(args.int8 / "model.onnx"))
    nodes = quantize_nodes(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    for t in {n.input[0] for n, *_ in nodes} - {i.name for i in model.graph.input}:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(t, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    x = centre_crop(args.photo, args.size)
    values = dict(zip([o.name for o in sess.get_outputs()], sess.run(None, {sess.get_inputs()[0].name: x})))
    values[sess.get_inputs()[0].name] = x
    print(f"{args.photo.name}, {args.size}x{args.size} centre crop")
    print("| tensor | range | step | values on the photo | clipped |")
    print("|---|---|---:|---|---:|")
    for n, lo, hi, step in nodes:
        v = values[n.input[0]]
        clipped = float(((v < lo - step / 2) | (v > hi + step / 2)).mean())
        print(f"| {n.input[0]} | [{lo:.3f}, {hi:.3f}] | {step:.4f} | [{v.min():.3f}, {v.max():.3f}] | {100 * clipped:.3f}% |")
    if not args.widen:
        return
    ref, ref_in, _ = open_bundle(args.fp32, 2)
    photos = [args.photo, *args.also]
    crops = [centre_crop(p, args.size) for p in photos]
    refs = [ref.run(None, {ref_in: c})[0] for c in crops]

    def scores(m) -> str:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return " | ".join(f"{psnr(s.run(None, {s.get_inputs()[0].name: c})[0], r):.2f}" for c, r in zip(crops, refs))

    print("\n| ranges | " + " | ".join(p.name[:32] for p in photos) + " |")
    print("|---|" + "---:|" * len(photos))
    print(f"| as built | {scores(model)} |")
    for spec in args.widen:
        names, _, factor = spec.rpartition(":")
        print(f"| {names} x{float(factor):g} | {scores(widened(model, names.split(','), float(factor)))} |", flush=True)


if __name__ == "__main__":
    main()
