"""ONNX quantization of a recipe: fp16, weight-only int8 (w8), and QDQ w8a8 / w8a16 / mixed
(what ONNX Runtime and TensorRT consume). Layers are found by the PyTorch module name the
exporter records on every node (``pkg.torch.onnx.name_scopes``)."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError, RestorekitError, require
from restorekit.quantize.recipe import Recipe

_WEIGHT_OPS = {"Conv": 0, "ConvTranspose": 1, "Gemm": 0, "MatMul": 1}  # op -> output-channel axis of W
W8_MIN_ELEMENTS = 16384  # a float initializer this big (and 2-D+) is a weight w8 stores as int8 wherever it is read


class TileReader:
    """onnxruntime CalibrationDataReader over calibration tiles."""

    def __init__(self, input_name: str, tiles: list[np.ndarray]):
        self._it = iter([{input_name: t} for t in tiles])

    def get_next(self):
        """The next calibration feed, or None when done (onnxruntime's CalibrationDataReader)."""
        return next(self._it, None)


def node_layers(model, layers: dict[str, str]) -> dict[str, str]:
    """``{node name: layer name}`` for the weight-carrying nodes of an exported model."""
    out = {}
    for node in model.graph.node:
        if node.op_type not in _WEIGHT_OPS:
            continue
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        if scopes is None:
            continue
        try:
            names = ast.literal_eval(scopes)
        except (ValueError, SyntaxError):
            continue
        layer = next((n for n in reversed(names) if n in layers), None)
        if layer is not None:
            out[node.name] = layer
    return out


def fp16_kept_nodes(model, keep: dict[str, str] | list[str]) -> list[str]:
    """The nodes of an exported model that the ``keep`` modules (``quantize.fp16`` labels) run
    themselves: those whose innermost recorded module scope is one of them."""
    from restorekit.quantize.fp16 import scope_module

    out = []
    for node in model.graph.node if keep else ():
        scopes = next((p.value for p in node.metadata_props if p.key == "pkg.torch.onnx.name_scopes"), None)
        try:
            names = ast.literal_eval(scopes) if scopes is not None else None
        except (ValueError, SyntaxError):
            names = None
        if isinstance(names, list) and scope_module(names) in keep:
            out.append(node.name)
    return out


def skip_fp16_round_trips(model, float_nodes: set[str]) -> int:
    """Let the float32 nodes of an fp16 model read the graph's float32 inputs and each other's
    outputs directly. ``convert_float_to_float16`` wraps each blocked node in casts of its own, so
    a value passed from one blocked node to the next still goes through fp16 (Cast to fp16, Cast
    back): a value beyond 65504 becomes inf there. Each Cast-to-float32 reading such a round trip
    is removed (its readers read the float32 value), then the Cast-to-fp16 nodes left unread.
    Returns how many round trips were removed."""
    from onnx import TensorProto

    graph = model.graph

    def cast_to(nd) -> int | None:
        return next((a.i for a in nd.attribute if a.name == "to"), None) if nd.op_type == "Cast" else None

    producers, consumers = _producers(model), _consumers(model)
    graph_inputs = {i.name for i in graph.input}
    outputs = {o.name for o in graph.output}
    drop = set()
    for back in graph.node:
        down = producers.get(back.input[0]) if cast_to(back) == TensorProto.FLOAT else None
        if down is None or cast_to(down) != TensorProto.FLOAT16 or back.output[0] in outputs:
            continue
        source = producers.get(down.input[0])
        if not (down.input[0] in graph_inputs or (source is not None and source.name in float_nodes)):
            continue
        for reader in consumers.get(back.output[0], []):
            reader.input[:] = [down.input[0] if i == back.output[0] else i for i in reader.input]
        drop.add(back.name)
    if not drop:
        return 0
    kept = [nd for nd in graph.node if nd.name not in drop]
    read = {i for nd in kept for i in nd.input} | outputs
    kept = [nd for nd in kept if not (cast_to(nd) == TensorProto.FLOAT16 and nd.output[0] not in read)]
    del graph.node[:]
    graph.node.extend(kept)
    return len(drop)


def _layer_nodes(model, recipe: Recipe, layers: dict[str, str] | None) -> dict[str, str]:
    mapping = node_layers(model, layers or {})
    if recipe.op_names or recipe.op_types:
        missing = [n for n in recipe.op_names if n not in mapping.values()]
        if missing:
            raise RestorekitError(f"cannot find layer {missing[0]!r} in the exported ONNX graph (the exporter "
                                  "recorded no module names for it): per-layer overrides need the dynamo exporter")
    return mapping


def quantize(float_model: Path, out_path: Path, recipe: Recipe, calib: list[np.ndarray] | None = None,
             layers: dict[str, str] | None = None, output_range: tuple[float, float] | None = None) -> dict:
    """Write ``recipe`` applied to an fp32 ONNX model; returns what was applied (for the manifest).

    ``layers`` is the PyTorch model's ``{module name: op type}`` (``recipe.quantizable_layers``);
    ``output_range`` is the range the model's output is clamped to where it is used (an image's
    [0, 1]; None: raw values): the output is quantized over it, not over the calibration's range."""
    onnx = require("onnx")
    model = onnx.load(str(float_model))
    mapping = _layer_nodes(model, recipe, layers)
    setting = {node: recipe.setting(layer, layers[layer]) for node, layer in mapping.items()}
    float_nodes = sorted(n for n, s in setting.items() if s is None)
    applied = {"recipe": recipe.to_dict(), "float_layers": sorted({mapping[n] for n in float_nodes})}
    if recipe.scheme == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        kept = fp16_kept_nodes(model, recipe.fp16_keep_float or {})  # the fp16 safety check's (quantize.fp16)
        if recipe.fp16_keep_float and not kept:
            raise RestorekitError(f"fp16 would overflow in {', '.join(recipe.fp16_keep_float)}, but the exported "
                                  "ONNX graph records no module names to keep them in fp32 (they need the dynamo "
                                  "exporter): use fp32 for this model")
        blocked = sorted(set(float_nodes) | set(kept))
        half = convert_float_to_float16(model, keep_io_types=True, node_block_list=blocked or None)
        skipped = skip_fp16_round_trips(half, set(blocked))
        onnx.save(half, str(out_path))
        if kept:
            applied["fp16_kept_float_nodes"] = len(kept)
        if skipped:
            applied["fp32_values_between_float_nodes"] = skipped
        return {**applied, "scheme": "fp16", "weights": "float16", "activations": "float16", "io": "float32"}
    if recipe.scheme == "w8":
        n = _weights_only_int8(model, {nd for nd, s in setting.items() if s is None or s.weights != "int8"})
        onnx.save(model, str(out_path))
        return {**applied, "scheme": "w8", "weights": "int8 per-channel symmetric (DequantizeLinear)",
                "activations": "float32", "layers_quantized": n}
    if not calib:
        raise BadInputError(f"{recipe.scheme} quantization needs calibration images (--calib DIR)")
    q = require("onnxruntime.quantization")
    act16 = recipe.default.activations == "int16"
    # before the range overrides below, which name each conv's (now padded) output tensor
    padded = pad_narrow_convs(model, [nd.name for nd in model.graph.node if nd.op_type == "Conv"
                                      and _activations(setting, nd.name, recipe) == "int8"], NARROW_CONV_PAD)
    overrides = {}
    by_name = {nd.name: nd for nd in model.graph.node}
    for node, s in setting.items():
        if s is None or s.activations == recipe.default.activations:
            continue
        qt = q.QuantType.QUInt16 if s.activations == "int16" else q.QuantType.QUInt8
        nd = by_name[node]
        for t in (nd.input[0], nd.output[0]):
            overrides[t] = [{"quant_type": qt}]
    for tensor, (lo, hi) in through_data_movement(model, _learned_ranges(recipe, mapping, setting, by_name)).items():
        if tensor not in overrides:
            overrides[tensor] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    for tensor, (lo, hi) in output_clamp_ranges(model).items():
        overrides.setdefault(tensor, [{}])[0].update(rmin=np.float32(min(lo, 0.0)), rmax=np.float32(max(hi, 0.0)))
    method = recipe.calibration.get("method", "minmax")
    extra = {"TensorQuantOverrides": overrides} if overrides else {}
    # a PReLU written max(x, a*x) (convert.rewrites) stays float between the Q/DQ pairs, as a
    # PRelu would: int8 slopes and an int8 Max cost fidelity, and ORT has no int8 Max kernel
    prelu_nodes = sorted(n.name for _, mul, mx in prelu_max_form(model) for n in (mul, mx))
    if method == "percentile":
        extra["CalibPercentile"] = float(recipe.calibration.get("percentile", 99.999))
    input_name = model.graph.input[0].name
    q.quantize_static(
        model if padded else str(float_model), str(out_path), TileReader(input_name, calib),
        quant_format=q.QuantFormat.QDQ, per_channel=True,
        activation_type=q.QuantType.QUInt16 if act16 else q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
        calibrate_method=q.CalibrationMethod.Percentile if method == "percentile" else q.CalibrationMethod.MinMax,
        nodes_to_exclude=float_nodes + prelu_nodes, extra_options=extra,
    )
    if float_nodes or output_range is not None:
        qmodel = onnx.load(str(out_path))
        _isolate_float_nodes(qmodel, float_nodes)
        narrowed = narrow_to_range(qmodel, output_quantizers(qmodel), output_range) if output_range else 0
        onnx.save(qmodel, str(out_path))
        if narrowed:
            applied["output_grid"] = f"output quantized over its calibrated range within {list(output_range)}"
    if padded:
        applied["padded_convs"] = {name: f"{n} -> {NARROW_CONV_PAD} output channels (zero filters, sliced off)"
                                   for name, n in padded.items()}
    return {**applied, "scheme": recipe.scheme, "format": "QDQ", "weights": "int8 per-channel symmetric",
            "activations": f"{'uint16' if act16 else 'uint8'} per-tensor",
            "activations_16bit_layers": sorted({mapping[n] for n in setting if setting[n] and setting[n].activations == "int16"}),
            "calibration": f"{method} on {len(calib)} photo tiles"
                           + (f"; learned ranges on {len(_learned_ranges(recipe, mapping, setting, by_name))} tensors"
                              if recipe.activation_ranges else "")}


def _activations(setting: dict, node: str, recipe: Recipe) -> str | None:
    """The activation type ``node`` computes with: its own setting (``None`` for a float layer),
    or the recipe's default for a node the layer mapping does not list."""
    if node not in setting:
        return recipe.default.activations
    return setting[node].activations if setting[node] is not None else None


#: ONNX Runtime's int8 conv kernel (MLAS) is slow below this many output channels: in the
#: built-in model on 2 cores at 256x256, its 48 -> 12 3x3 tail took 6.5 ms as QLinearConv against
#: 2.3 ms for each 48 -> 48 conv; its int8 speed-up over fp32 is 2.62x with its two 12-channel convs
#: padded to 16, against 2.15x unpadded (`docs/experiments/measurement-log.md`).
NARROW_CONV_PAD = 16


def pad_narrow_convs(model, nodes: list[str], width: int) -> dict[str, int]:
    """Give each named ``Conv`` (constant weights, one group) with fewer than ``width`` output
    channels zero filters up to ``width``, and a ``Slice`` after it back to its own channels.
    The values are unchanged (the extra channels are zero and dropped); ONNX Runtime runs the
    conv with its fast int8 kernel and the slice on uint8. Returns ``{node: original channels}``."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    readers = _consumers(model)
    wanted, done = set(nodes), {}
    for pos, nd in reversed(list(enumerate(model.graph.node))):
        if nd.name not in wanted or nd.op_type != "Conv" or nd.input[1] not in inits:
            continue
        if any(len(readers.get(p, [])) != 1 for p in nd.input[1:]):  # a weight another node shares
            continue
        if any(a.name == "group" and a.i != 1 for a in nd.attribute):
            continue
        w = numpy_helper.to_array(inits[nd.input[1]])
        n = w.shape[0]
        if n >= width:
            continue
        params = [nd.input[1]] + ([nd.input[2]] if len(nd.input) > 2 and nd.input[2] in inits else [])
        for name in params:
            a = numpy_helper.to_array(inits[name])
            inits[name].CopyFrom(numpy_helper.from_array(
                np.concatenate([a, np.zeros((width - n,) + a.shape[1:], a.dtype)]), name))
        out = nd.output[0]
        nd.output[0] = f"{out}_pad{width}"
        bounds = [f"{out}_slice_{k}" for k in ("starts", "ends", "axes")]
        model.graph.initializer.extend(numpy_helper.from_array(np.array([v], np.int64), b)
                                       for b, v in zip(bounds, (0, n, 1)))
        model.graph.node.insert(pos + 1, helper.make_node("Slice", [nd.output[0], *bounds], [out],
                                                          name=f"{nd.name}_slice"))
        done[nd.name] = n
    if done:  # the padded weights' recorded shapes no longer hold
        stale = {p for nd in model.graph.node if nd.name in done for p in nd.input[1:]}
        keep = [v for v in model.graph.value_info if v.name not in stale]
        del model.graph.value_info[:]
        model.graph.value_info.extend(keep)
    return dict(reversed(list(done.items())))


def _learned_ranges(recipe: Recipe, mapping: dict[str, str], setting: dict, by_name: dict) -> dict[str, tuple]:
    """``{tensor: (rmin, rmax)}`` from the recipe's learned activation ranges (quantization-aware
    fine-tuning) for the inputs and outputs of the int8 layers."""
    out = {}
    for node, layer in mapping.items():
        ranges, s = (recipe.activation_ranges or {}).get(layer), setting.get(node)
        if not ranges or s is None or s.activations != "int8":
            continue
        nd = by_name[node]
        for key, tensor in (("input", nd.input[0]), ("output", nd.output[0])):
            if key in ranges:
                out[tensor] = tuple(ranges[key])
    return out


def _consumers(model) -> dict[str, list]:
    """``{tensor name: nodes that read it}`` of an ONNX graph."""
    out: dict[str, list] = {}
    for nd in model.graph.node:
        for i in nd.input:
            out.setdefault(i, []).append(nd)
    return out


def _producers(model) -> dict:
    """``{tensor name: the node that writes it}`` of an ONNX graph."""
    return {o: nd for nd in model.graph.node for o in nd.output}


#: Ops that move values without changing them: a clamp after them bounds their input too.
_DATA_MOVEMENT = ("DepthToSpace", "SpaceToDepth", "Reshape", "Transpose", "Identity", "Flatten", "Squeeze", "Unsqueeze")


def through_data_movement(model, ranges: dict[str, tuple]) -> dict[str, tuple]:
    """``ranges`` extended along data movement (and ``Slice``): a tensor that only moves values
    (the ``DepthToSpace`` of a pixel shuffle, the ``Slice`` after a padded conv) gets the range of
    the tensor it moves, and that tensor's own source the same.

    Calibration observes those tensors separately: where ``ranges`` are learned (fine-tuning
    shrinks them), the observed range of the moved tensor is wider, and ONNX Runtime requantizes
    onto its coarser step (Real-ESRGAN Compact: 0.0070 after a 0.0034 conv output, -0.8 dB)."""
    consumers, producers = _consumers(model), _producers(model)
    moves = (*_DATA_MOVEMENT, "Slice")
    out = dict(ranges)
    for tensor, r in ranges.items():
        t = tensor
        while len(consumers.get(t, [])) == 1 and consumers[t][0].op_type in moves:
            t = consumers[t][0].output[0]
            out.setdefault(t, r)
        t = tensor
        while (p := producers.get(t)) is not None and p.op_type in moves and len(consumers.get(p.input[0], [])) == 1:
            t = p.input[0]
            out.setdefault(t, r)
    return out


def output_quantizers(qmodel) -> list:
    """The ``QuantizeLinear`` nodes of a QDQ model whose values reach a graph output through
    dequantization and data movement alone (the last op's output quantizer, and those after it)."""
    producers = _producers(qmodel)
    out = []
    for o in qmodel.graph.output:
        t = o.name
        while (p := producers.get(t)) is not None:
            if p.op_type == "DequantizeLinear" and getattr(producers.get(p.input[0]), "op_type", None) == "QuantizeLinear":
                q = producers[p.input[0]]
                out.append(q)
                t = q.input[0]
            elif p.op_type in _DATA_MOVEMENT:
                t = p.input[0]
            else:
                break
    return out


def narrow_to_range(qmodel, quantizers: list, bounds: tuple[float, float]) -> int:
    """Narrow the ranges of ``quantizers`` (``QuantizeLinear`` nodes of ``qmodel``) to ``bounds`` (kept
    around 0): the grid of an output that is clamped to ``bounds`` where it is used. Calibration
    sees the overshoot of a sharpening net (Real-ESRGAN Compact: [-0.28, 1.36]), which makes the
    step of its image output 0.0064 instead of 1/255. Returns how many ranges were narrowed."""
    from onnx import numpy_helper

    init = {i.name: i for i in qmodel.graph.initializer}
    count = 0
    for nd in quantizers:
        if len(nd.input) < 3:
            continue
        scale, zero = (numpy_helper.to_array(init[n]) if n in init else None for n in nd.input[1:3])
        if scale is None or zero is None or scale.ndim or zero.dtype not in (np.uint8, np.uint16):
            continue
        top = float(np.iinfo(zero.dtype).max)
        lo, hi = -float(zero) * float(scale), (top - float(zero)) * float(scale)
        new_lo, new_hi = min(max(lo, bounds[0]), 0.0), max(min(hi, bounds[1]), 0.0)
        if new_hi - new_lo >= hi - lo - 1e-12 or new_hi <= new_lo:
            continue
        step = (new_hi - new_lo) / top
        # the DequantizeLinear nodes after this Q read the same scale / zero-point initializers
        init[nd.input[1]].CopyFrom(numpy_helper.from_array(np.array(step, dtype=scale.dtype), nd.input[1]))
        init[nd.input[2]].CopyFrom(numpy_helper.from_array(
            np.array(np.clip(round(-new_lo / step), 0, top), dtype=zero.dtype), nd.input[2]))
        count += 1
    return count


def output_clamp_ranges(model) -> dict[str, tuple[float, float]]:
    """``{tensor: (lo, hi)}`` around the model's output clamp: a ``Clip(lo, hi)`` with constant
    bounds whose result reaches a graph output through data movement alone, and the tensors that
    feed it through data movement alone (e.g. the residual ``Add`` before the final
    ``DepthToSpace`` and ``Clip(0, 1)`` of an image model).

    Calibration sees the clamp's input before clamping (say [-0.2, 1.2]), which makes its uint8
    step coarser than the output needs; values outside the clamp are discarded anyway, so these
    tensors are quantized over the clamp's own range: on [0, 1], the 1/255 grid of an 8-bit image."""
    from onnx import numpy_helper

    consts = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
    for nd in model.graph.node:
        if nd.op_type == "Constant" and nd.attribute and nd.attribute[0].name == "value":
            consts[nd.output[0]] = numpy_helper.to_array(nd.attribute[0].t)
    consumers = _consumers(model)
    producers = _producers(model)
    graph_outputs = {o.name for o in model.graph.output}

    def reaches_output(t: str) -> list[str] | None:  # the tensors from t to a graph output, or None
        chain = [t]
        while t not in graph_outputs:
            users = consumers.get(t, [])
            if len(users) != 1 or users[0].op_type not in _DATA_MOVEMENT:
                return None
            t = users[0].output[0]
            chain.append(t)
        return chain

    out = {}
    for clip in (nd for nd in model.graph.node if nd.op_type == "Clip" and len(nd.input) == 3):
        bounds = [consts.get(i) for i in clip.input[1:]]
        downstream = reaches_output(clip.output[0])
        if downstream is None or any(b is None or np.size(b) != 1 for b in bounds):
            continue
        lo, hi = (float(np.asarray(b).reshape(())) for b in bounds)
        chain, t = list(downstream), clip.input[0]
        while t not in graph_outputs and len(consumers.get(t, [])) == 1:
            chain.append(t)
            p = producers.get(t)
            if p is None or p.op_type not in _DATA_MOVEMENT:
                break
            t = p.input[0]
        out.update({c: (lo, hi) for c in chain})
    return out


def prelu_max_form(model) -> list[tuple]:
    """``[(x, Mul, Max)]``: each PReLU written ``Max(x, Mul(x, a))`` in an ONNX graph (the
    ``convert.rewrites`` max form), ``x`` the input tensor's name, ``a`` a constant."""
    producers = _producers(model)
    consts = {i.name for i in model.graph.initializer} | {nd.output[0] for nd in model.graph.node
                                                          if nd.op_type == "Constant"}
    out = []
    for mx in (nd for nd in model.graph.node if nd.op_type == "Max" and len(nd.input) == 2):
        for x, prod in ((mx.input[0], mx.input[1]), (mx.input[1], mx.input[0])):
            mul = producers.get(prod)
            if mul is not None and mul.op_type == "Mul" and x in mul.input:
                other = mul.input[1] if mul.input[0] == x else mul.input[0]
                if other in consts or (producers.get(other) is not None and producers[other].op_type == "Reshape"
                                       and producers[other].input[0] in consts):
                    out.append((x, mul, mx))
                    break
    return out


_PASS_THROUGH = ("Relu", "Clip", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "Tanh")


def _isolate_float_nodes(model, float_nodes: list[str]) -> None:
    """Remove the Q/DQ pair after each float node (and its activation).

    Left in place, ONNX Runtime's optimizer sees DQ -> Conv(float weights) -> Q and fuses it into
    a QLinearConv, quantizing the weights the recipe keeps in float (measured: a planted
    layer kept "float" this way lost 15 dB). Without the Q, the layer (and the next conv, whose
    input is now float) runs in float."""
    consumers = _consumers(model)
    by_name = {nd.name: nd for nd in model.graph.node}
    prelu_max = {x: mx for x, _, mx in prelu_max_form(model)}
    drop = []
    for name in float_nodes:
        t = by_name[name].output[0]
        while True:
            if len(consumers.get(t, [])) == 1 and consumers[t][0].op_type in _PASS_THROUGH:
                t = consumers[t][0].output[0]
            elif t in prelu_max and len(consumers.get(t, [])) == 2:  # x -> Mul, Max: a PReLU's max form
                t = prelu_max[t].output[0]
            else:
                break
        for q in [c for c in consumers.get(t, []) if c.op_type == "QuantizeLinear"]:
            for dq in [c for c in consumers.get(q.output[0], []) if c.op_type == "DequantizeLinear"]:
                for user in consumers.get(dq.output[0], []):
                    user.input[:] = [t if i == dq.output[0] else i for i in user.input]
                for out in model.graph.output:
                    if out.name == dq.output[0]:  # keep the graph output's name
                        dq.op_type, dq.input[:] = "Identity", [t]
                        dq.ClearField("attribute")
                        break
                else:
                    drop.append(dq)
            if not any(c.op_type != "DequantizeLinear" for c in consumers.get(q.output[0], [])):
                drop.append(q)
    for nd in drop:
        model.graph.node.remove(nd)


def _weights_only_int8(model, float_nodes: set[str]) -> int:
    """Store every large float weight as int8 + per-channel scale behind a DequantizeLinear; compute
    stays float. A weight is the filter of a Conv / ConvTranspose / Gemm / MatMul, or any other float
    initializer of at least ``W8_MIN_ELEMENTS`` values and 2+ dims (a StyleGAN modulated conv's weight
    that feeds a Mul, a spectral-normed weight that feeds a Div, an embedding table): that is where a
    big network's size is. Weights read by a node in ``float_nodes`` (layers the recipe keeps float)
    stay float. Returns how many were quantized."""
    from onnx import helper, numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    readers: dict[str, list[tuple]] = {}
    for node in model.graph.node:
        for k, name in enumerate(node.input):
            if name in inits:
                readers.setdefault(name, []).append((node, k))
    done, new_nodes = 0, []
    for wname, uses in readers.items():
        init = inits[wname]
        if init.data_type != 1 or any(nd.name in float_nodes for nd, _ in uses):  # 1: FLOAT
            continue
        filters = {_filter_axis(nd) for nd, k in uses if k == 1 and nd.op_type in _WEIGHT_OPS}
        w = numpy_helper.to_array(init)
        if w.ndim < 2 or (not filters and w.size < W8_MIN_ELEMENTS) or len(filters) > 1:
            continue
        axis = filters.pop() if filters else 0
        red = tuple(i for i in range(w.ndim) if i != axis)
        scale = np.maximum(np.abs(w).max(axis=red), 1e-12) / 127.0
        shape = [1] * w.ndim
        shape[axis] = -1
        wq = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
        model.graph.initializer.remove(init)
        model.graph.initializer.extend([numpy_helper.from_array(wq, f"{wname}_int8"),
                                        numpy_helper.from_array(scale.astype(np.float32), f"{wname}_scale"),
                                        numpy_helper.from_array(np.zeros_like(scale, dtype=np.int8), f"{wname}_zp")])
        new_nodes.append(helper.make_node("DequantizeLinear", [f"{wname}_int8", f"{wname}_scale", f"{wname}_zp"],
                                          [wname], name=f"{wname}_dequantize", axis=axis))
        done += 1
    for i, nd in enumerate(new_nodes):  # constants first: the graph stays topologically sorted
        model.graph.node.insert(i, nd)
    return done


def _filter_axis(node) -> int:
    """The output-channel axis of a weight op's filter (input 1)."""
    if node.op_type == "Gemm" and not any(a.name == "transB" and a.i for a in node.attribute):
        return 1
    return _WEIGHT_OPS[node.op_type]
