"""Where an int8 ONNX bundle clips one photo, and what wider ranges would give.

For every ``QuantizeLinear`` of the int8 model: its range (from scale and zero point), the range of
the float values that reach it on the photo's centre crop (the graph run unfused, in float), and
the share of those values outside the range (clipped). With ``--widen``, the listed tensors'
ranges are scaled by a factor (the zero point kept in place, the step growing with it), and the
int8 model is scored against the fp32 bundle again, on the photo and on ``--also`` photos: does
the clipping cost fidelity, or do the coarser steps cost more? ``--unclip`` keeps a quantizer's
rounding without its clipping; ``--drop`` removes the quantizer (which of them costs the most).

    python benchmarks/onnx_int8_ranges.py bundles/realesr-animevideov3/onnx-fp32 \\
        bundles/realesr-animevideov3/onnx-int8 PHOTO --widen 'conv2d*,maximum*,pixel_shuffle:1.2' \\
        --unclip '*' --unclip conv2d_5,maximum_5 --also OTHER.png
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from onnx_int8_check import SUFFIXES, centre_crop, open_bundle, psnr  # noqa: E402


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


def _copy_with_consumers(model):
    """A copy of ``model`` and ``{tensor name: the copy's nodes that read it}``."""
    import onnx

    m = onnx.ModelProto()
    m.CopyFrom(model)
    consumers: dict[str, list] = {}
    for n in m.graph.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    return m, consumers


def unclipped(model, patterns: list[str]):
    """A copy of ``model`` whose activation QuantizeLinear nodes on the tensors matching ``patterns``
    (and their DequantizeLinear nodes) quantize to uint16 with the same step and the uint8 grid in
    its middle (zero point + 32640): the same rounding, with no clipping in practice."""
    import onnx
    from onnx import numpy_helper

    m, consumers = _copy_with_consumers(model)
    for k, (q, lo, _hi, step) in enumerate(quantize_nodes(m)):
        if not any(fnmatch.fnmatchcase(q.input[0], p) for p in patterns):
            continue
        zero = numpy_helper.from_array(np.array(round(-lo / step) + 32640, dtype=np.uint16), f"unclipped_zero_point_{k}")
        m.graph.initializer.append(zero)
        for n in [q, *(c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear")]:
            n.domain = "com.microsoft"  # its QuantizeLinear / DequantizeLinear take 16-bit types
            n.input[2] = zero.name
    if not any(o.domain == "com.microsoft" for o in m.opset_import):
        m.opset_import.append(onnx.helper.make_opsetid("com.microsoft", 1))
    return m


def dropped(model, patterns: list[str]):
    """A copy of ``model`` without the activation QuantizeLinear nodes on the tensors matching
    ``patterns`` and their DequantizeLinear nodes: those values stay float (not int8: ONNX Runtime
    runs the convs next to them in float; what a graph without those quantizers would give)."""
    m, consumers = _copy_with_consumers(model)
    remove = []
    for q, *_ in quantize_nodes(m):
        if not any(fnmatch.fnmatchcase(q.input[0], p) for p in patterns):
            continue
        for dq in (c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"):
            for reader in consumers.get(dq.output[0], []):
                reader.input[:] = [q.input[0] if i == dq.output[0] else i for i in reader.input]
            remove.append(dq)
        remove.append(q)
    for n in remove:
        m.graph.node.remove(n)
    used = {i for n in m.graph.node for i in n.input}
    kept = [i for i in m.graph.initializer if i.name in used]
    del m.graph.initializer[:]
    m.graph.initializer.extend(kept)
    return m


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("fp32", type=Path, help="the fp32 ONNX bundle folder")
    ap.add_argument("int8", type=Path, help="the int8 ONNX bundle folder")
    ap.add_argument("photo", type=Path)
    ap.add_argument("--also", type=Path, nargs="*", default=[],
                    help="more photos (files or folders) to score with --widen / --unclip / --drop")
    ap.add_argument("--summary", action="store_true",
                    help="one column each for mean, worst and the count under 42 dB instead of one per photo")
    ap.add_argument("--widen", action="append", default=[], metavar="TENSORS:FACTOR",
                    help="comma-separated tensor names or shell patterns ('conv2d*') and a factor; repeatable")
    ap.add_argument("--unclip", action="append", default=[], metavar="TENSORS",
                    help="comma-separated tensor names or shell patterns whose quantizers stop clipping; repeatable")
    ap.add_argument("--drop", action="append", default=[], metavar="TENSORS",
                    help="comma-separated tensor names or shell patterns whose quantizers are removed; repeatable")
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
    if not args.widen and not args.unclip and not args.drop:
        return
    ref, ref_in, _ = open_bundle(args.fp32, 2)
    photos = [args.photo]
    for p in args.also:
        photos += sorted(f for f in p.iterdir() if f.suffix.lower() in SUFFIXES) if p.is_dir() else [p]
    photos = list(dict.fromkeys(p.resolve() for p in photos))  # the photo may be in an --also folder too
    crops = [centre_crop(p, args.size) for p in photos]
    refs = [ref.run(None, {ref_in: c})[0] for c in crops]

    def scores(m) -> str:
        s = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        v = np.array([psnr(s.run(None, {s.get_inputs()[0].name: c})[0], r) for c, r in zip(crops, refs)])
        if not args.summary:
            return " | ".join(f"{x:.2f}" for x in v)
        return f"{v.mean():.2f} | {v.min():.2f} ({photos[int(v.argmin())].name[:24]}) | {int((v < 42).sum())}"

    columns = ["mean", "worst", "< 42 dB"] if args.summary else [p.name[:32] for p in photos]
    print(f"\n{len(photos)} photos, PSNR of int8 vs fp32 (dB)")
    print("| ranges | " + " | ".join(columns) + " |")
    print("|---|" + "---:|" * len(columns))
    print(f"| as built | {scores(model)} |")
    for spec in args.widen:
        names, _, factor = spec.rpartition(":")
        print(f"| {names} x{float(factor):g} | {scores(widened(model, names.split(','), float(factor)))} |", flush=True)
    for names in args.unclip:
        print(f"| {names} unclipped | {scores(unclipped(model, names.split(',')))} |", flush=True)
    for names in args.drop:
        print(f"| {names} not quantized | {scores(dropped(model, names.split(',')))} |", flush=True)


if __name__ == "__main__":
    main()
