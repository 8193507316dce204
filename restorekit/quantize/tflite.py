"""TFLite quantization of a recipe with ai-edge-quantizer: fp16 weights, weight-only int8 (w8),
full-integer w8a8 (int8 io), 16x8 (w8a16) and per-layer overrides (mixed).

TFLite tensors carry no PyTorch module names, so layers are matched by order: the k-th
convolution (or fully connected) op of the flatbuffer is the k-th such module call in the
PyTorch forward pass; the counts must agree or per-layer overrides are refused."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError, RestorekitError, require
from restorekit.quantize.recipe import Recipe

_CONV_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV")
_GROUP = {"Conv2d": "conv", "ConvTranspose2d": "conv", "Linear": "fc"}


def pixel_shuffle_ops(interp) -> set[int]:
    """Indices (in ``_get_ops_details`` order) of the TRANSPOSE_CONV ops that are a pixel shuffle
    (``convert.rewrites.TransposedConvPixelShuffle``): a square r x r filter of zeros and ones that
    sends every input channel to exactly one (output channel, sub-pixel). They move values and
    compute nothing: kept in float (XNNPACK's int8 transposed conv took 15 of 27 ms of the built-in
    int8 model at 256 px, and requantizing it adds a rounding) and seen through like a reshape."""
    found = set()
    for k, op in enumerate(interp._get_ops_details()):  # noqa: SLF001
        if op["op_name"] != "TRANSPOSE_CONV" or len(op["inputs"]) < 3:
            continue
        try:
            filt = np.asarray(interp.get_tensor(op["inputs"][1]), dtype=np.float32)  # [out, kh, kw, in]
        except ValueError:
            continue
        if filt.ndim != 4 or filt.shape[1] != filt.shape[2] or not np.isin(filt, (0.0, 1.0)).all():
            continue
        per_input = filt.reshape(-1, filt.shape[3]).sum(axis=0)
        per_output = filt.sum(axis=3)
        if (per_input == 1).all() and (per_output == 1).all():
            found.add(k)
    return found


def _weight_ops(float_model: Path) -> list[dict]:
    """The conv / fully connected ops in graph order: group, scope regex, input and output tensor
    names, filter dims, and ``region``: a scope regex for the op together with the ops that follow
    it on its output alone (the MUL + MAXIMUM of a PReLU, say), so a layer kept in float keeps its
    activation in float too instead of re-quantizing the conv output for an int8 MUL."""
    interp = require("ai_edge_litert.interpreter").Interpreter(model_path=str(float_model))
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    shapes = {d["index"]: d["shape"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001 - the only op-order view the interpreter offers
    shuffles = pixel_shuffle_ops(interp)
    constants = ({i for op in ops for i in op["inputs"] if i >= 0} - {i for op in ops for i in op["outputs"]}
                 - {d["index"] for d in interp.get_input_details()})
    out = []
    owner: dict[int, int] = {}  # tensor index -> index in ``out`` of the weight op it derives from alone
    for k, op in enumerate(ops):
        outputs = [i for i in op["outputs"] if i >= 0]
        scope = "".join(f"{names[i]};" for i in outputs)
        group = "conv" if op["op_name"] in _CONV_OPS else "fc" if op["op_name"] == "FULLY_CONNECTED" else None
        if k in shuffles:  # not a layer: a pixel shuffle
            group = None
        if group:
            filt = op["inputs"][1] if len(op["inputs"]) > 1 and op["inputs"][1] >= 0 else None
            out.append({"group": group, "scope": "^" + re.escape(scope) + "$", "scopes": [scope],
                        "input": names[op["inputs"][0]], "output": names[op["outputs"][0]],
                        "filter_dims": sorted(int(d) for d in shapes[filt]) if filt is not None else None})
            owners = {len(out) - 1}
        else:  # constants (no producer) are ignored; an op fed by one layer's outputs only joins its region
            owners = {owner.get(i, -1) for i in op["inputs"] if i >= 0 and i not in constants}
        if len(owners) == 1 and -1 not in owners:
            k = owners.pop()
            owner.update({i: k for i in outputs})
            if not group:
                out[k]["scopes"].append(scope)
    for op in out:
        op["region"] = "^(?:" + "|".join(re.escape(s) for s in op.pop("scopes")) + ")$"
    return out


#: TFLite's clamping activations and their bounds.
_CLAMPS = {"RELU_0_TO_1": (0.0, 1.0), "RELU_N1_TO_1": (-1.0, 1.0), "RELU6": (0.0, 6.0)}
#: Ops that move values without changing them.
_DATA_MOVEMENT = ("RESHAPE", "TRANSPOSE", "DEPTH_TO_SPACE", "SPACE_TO_DEPTH", "SQUEEZE", "EXPAND_DIMS")


def output_clamp_ranges(float_model: Path) -> dict[str, tuple[float, float]]:
    """``{tensor name: (lo, hi)}`` around the model's output clamp (a RELU_0_TO_1, say, whose result
    reaches the model output through data movement alone), for the clamp's result, the tensors
    after it and the tensors that feed it through data movement alone.

    ai-edge-quantizer's calibration averages the per-sample min / max, so the output range ends
    short of the clamp (measured: [0, 0.969] on the built-in model, clipping every highlight) and
    the clamp's input keeps its pre-clamp range (coarser steps). Both get the clamp's own range."""
    interp = require("ai_edge_litert.interpreter").Interpreter(model_path=str(float_model))
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001
    moves = {id(ops[k]) for k in pixel_shuffle_ops(interp)} | {id(o) for o in ops if o["op_name"] in _DATA_MOVEMENT}
    outputs = {d["index"] for d in interp.get_output_details()}
    consumers: dict[int, list] = {}
    for op in ops:
        for i in op["inputs"]:
            consumers.setdefault(i, []).append(op)
    producer = {i: op for op in ops for i in op["outputs"]}
    out = {}
    for op in (o for o in ops if o["op_name"] in _CLAMPS):
        chain, t = [], op["outputs"][0]
        while True:
            chain.append(t)
            users = consumers.get(t, [])
            if t in outputs or len(users) != 1 or id(users[0]) not in moves:
                break
            t = users[0]["outputs"][0]
        if t not in outputs:
            continue
        t = op["inputs"][0]
        while t not in outputs and len(consumers.get(t, [])) == 1:
            chain.append(t)
            p = producer.get(t)
            if p is None or id(p) not in moves:
                break
            t = p["inputs"][2 if p["op_name"] == "TRANSPOSE_CONV" else 0]  # TRANSPOSE_CONV: [shape, filter, data]
        out.update({names[i]: _CLAMPS[op["op_name"]] for i in chain})
    return out


def layer_ops(float_model: Path, call_order: list[tuple[str, str]],
              weight_shapes: dict[str, tuple[int, ...]] | None = None) -> dict[str, dict]:
    """``{layer name: op}`` (see :func:`_weight_ops`) pairing TFLite ops with PyTorch module calls by order.

    With ``weight_shapes`` (``{layer: weight shape}``), ops whose filter does not match the next
    call's weight (a functional ``F.conv2d`` in the forward pass, say) are skipped; without, the
    counts must agree."""
    ops = _weight_ops(float_model)
    out = {}
    for group in ("conv", "fc"):
        tfl = [op for op in ops if op["group"] == group]
        torch_calls = [n for n, t in call_order if _GROUP.get(t) == group]
        if weight_shapes is not None:
            j = 0
            for op in tfl:
                if j < len(torch_calls) and op["filter_dims"] == sorted(weight_shapes[torch_calls[j]]):
                    out[torch_calls[j]] = op
                    j += 1
            if j == len(torch_calls):
                continue
            out = {k: v for k, v in out.items() if k not in torch_calls}
        if len(tfl) != len(torch_calls):
            raise RestorekitError(f"cannot pair TFLite ops with layers: {len(tfl)} {group} ops in the flatbuffer, "
                                  f"{len(torch_calls)} in the PyTorch forward pass")
        out.update(zip(torch_calls, tfl))
    return out


def quantize(float_model: Path, out_path: Path, recipe: Recipe, calib: list[np.ndarray] | None = None,
             layers: dict[str, str] | None = None, call_order: list[tuple[str, str]] | None = None,
             weight_shapes: dict[str, tuple[int, ...]] | None = None) -> dict:
    """Write ``recipe`` applied to an fp32 .tflite model; returns what was applied."""
    require("ai_edge_quantizer")
    from ai_edge_quantizer import quantizer, recipe_manager
    from ai_edge_quantizer.algorithm_manager import AlgorithmName
    from ai_edge_quantizer.qtyping import TFLOperationName as Op

    rm = recipe_manager.RecipeManager()
    applied = {"recipe": recipe.to_dict()}

    def add(regex: str, setting) -> None:
        if setting is None:
            rm.add_quantization_config(regex, Op.ALL_SUPPORTED, algorithm_key=AlgorithmName.NO_QUANTIZE)
        elif setting.weights == "fp16":
            rm.add_weight_only_config(regex=regex, operation_name=Op.ALL_SUPPORTED, num_bits=16,
                                      algorithm_key=AlgorithmName.FLOAT_CASTING)
        elif setting.activations is None:
            rm.add_weight_only_config(regex=regex, operation_name=Op.ALL_SUPPORTED, num_bits=8)
        else:
            rm.add_static_config(regex=regex, operation_name=Op.ALL_SUPPORTED,
                                 activation_num_bits=16 if setting.activations == "int16" else 8, weight_num_bits=8)

    add(".*", recipe.default)
    interp = require("ai_edge_litert.interpreter").Interpreter(model_path=str(float_model))
    names = {d["index"]: d["name"] for d in interp.get_tensor_details()}
    ops = interp._get_ops_details()  # noqa: SLF001
    for k in sorted(pixel_shuffle_ops(interp)):  # a pixel shuffle stays in float (see pixel_shuffle_ops)
        add("^" + re.escape("".join(f"{names[i]};" for i in ops[k]["outputs"] if i >= 0)) + "$", None)
    per_layer = {}
    if recipe.op_names or recipe.op_types:
        for name, op in layer_ops(float_model, call_order or [], weight_shapes).items():
            s = recipe.setting(name, layers[name])
            if s != recipe.default:
                per_layer[name] = s
                add(op["region"] if s is None else op["scope"], s)
        applied["float_layers"] = sorted(n for n, s in per_layer.items() if s is None)
    qt = quantizer.Quantizer(str(float_model))
    qt.load_quantization_recipe(rm.get_quantization_recipe())
    if not recipe.integer:
        result = qt.quantize()
        kind = {"fp16": ("float16", "float32"), "w8": ("int8 per-channel", "float32")}[recipe.scheme]
        applied.update({"scheme": recipe.scheme, "weights": kind[0], "activations": kind[1]})
    else:
        if not calib:
            raise BadInputError(f"{recipe.scheme} quantization needs calibration images (--calib DIR)")
        interp = require("ai_edge_litert.interpreter").Interpreter(model_path=str(float_model))
        (sig_key, sig), = interp.get_signature_list().items()
        in_name = sig["inputs"][0]
        shape = tuple(interp.get_input_details()[0]["shape_signature"])  # -1: dynamic (the tile's own)
        samples = [{in_name: _fit_nhwc(t, shape)} for t in calib]
        ranges = _calibrate_min_max(qt, sig_key, samples)
        # The model's input and output are images: their value range is known, [0, 1].
        io_names = [interp.get_input_details()[0]["name"], interp.get_output_details()[0]["name"]]
        for name in io_names:
            if name in ranges:
                r = ranges[name]
                r["min"] = np.minimum(r["min"], 0.0).astype(np.float32)
                r["max"] = np.maximum(r["max"], 1.0).astype(np.float32)
        learned = _apply_learned_ranges(ranges, recipe, float_model, call_order, per_layer, weight_shapes)
        for name, (lo, hi) in output_clamp_ranges(float_model).items():
            if name in ranges:
                r = ranges[name]
                r["min"] = np.full_like(np.asarray(r["min"], np.float32), min(lo, 0.0))
                r["max"] = np.full_like(np.asarray(r["max"], np.float32), max(hi, 0.0))
        result = qt.quantize(ranges)
        bits = "int16" if recipe.default.activations == "int16" else "int8"
        applied.update({"scheme": recipe.scheme, "weights": "int8", "activations": bits,
                        "io": "int8" if bits == "int8" and not per_layer else "see model file",
                        "calibration": f"ai-edge-quantizer min-max on {len(calib)} photo tiles"
                                       + (f"; learned ranges on {learned} tensors" if learned else "")})
    out_path.write_bytes(bytes(result.quantized_model))
    return applied


def _calibrate_min_max(qt, sig_key: str, samples: list[dict]) -> dict:
    """Each tensor's min / max over all ``samples``.

    ``Quantizer.calibrate`` merges the samples' ranges by a moving average (smoothing 0.95), so a
    range ends near a typical tile's and clips the activations of every brighter or busier one
    (measured on the built-in model: up to 1.3 dB lost against ground truth on single photos).
    Calibrating one sample at a time and keeping the extremes is true min-max."""
    merged: dict = {}
    for sample in samples:
        for name, qsv in qt.calibrate({sig_key: [sample]}).items():
            if name not in merged or not merged[name]:
                merged[name] = dict(qsv)
            elif qsv:
                m = merged[name]
                m["min"] = np.minimum(m["min"], qsv["min"])
                m["max"] = np.maximum(m["max"], qsv["max"])
    return merged


def _apply_learned_ranges(ranges: dict, recipe: Recipe, float_model: Path, call_order, per_layer: dict,
                          weight_shapes=None) -> int:
    """Overwrite the calibrated min/max of each int8 conv's input and output tensors with the
    recipe's learned activation ranges (quantization-aware fine-tuning); returns how many."""
    if not recipe.activation_ranges or not call_order:
        return 0
    done = 0
    for layer, op in layer_ops(float_model, call_order, weight_shapes).items():
        learned = recipe.activation_ranges.get(layer)
        if not learned or layer in per_layer:
            continue
        for key in ("input", "output"):
            r = ranges.get(op[key])
            if key in learned and r is not None:
                lo, hi = learned[key]
                r["min"] = np.full_like(np.asarray(r["min"], np.float32), min(lo, 0.0))
                r["max"] = np.full_like(np.asarray(r["max"], np.float32), max(hi, 0.0))
                done += 1
    return done


def _fit_nhwc(tile: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """NCHW calibration tile -> NHWC array of the model's input shape (crop or pad); a dynamic
    dimension (-1) keeps the tile's own size."""
    from restorekit.runtime.tiling import pad_to

    img = tile[0].transpose(1, 2, 0)
    h, w = (int(s) if s > 0 else n for s, n in zip(shape[1:3], img.shape[:2]))
    img = pad_to(img, h, w)[:h, :w]
    return np.ascontiguousarray(img[None], dtype=np.float32)
