"""Core ML quantization of a recipe. Weights with ``coremltools.optimize.coreml``: w8 (linear
symmetric per-channel int8) and palettize4/6/8 (k-means look-up tables). Activations (w8a8) with
``coremltools.optimize.torch``: the PyTorch model gets int8 fake quantizers, is calibrated on
photo tiles, finalized and then converted, so the program carries quantize/dequantize ops. All of
this works on Linux; predictions need macOS, so the numeric effect is measured in PyTorch: the
model with the weights decompressed from the program (:func:`with_weights`), or the finalized
fake-quantized model (:func:`quantize_activations`)."""

from __future__ import annotations

import copy

import numpy as np

from restorekit.core.errors import require
from restorekit.quantize.recipe import Recipe

#: Weights smaller than this stay float (biases, tiny kernels: no size to gain).
WEIGHT_THRESHOLD = 1024


def compress(mlmodel, recipe: Recipe):
    """The compressed model and what was applied (fp16 is applied at conversion instead)."""
    require("coremltools")
    import coremltools.optimize.coreml as cto

    if recipe.scheme == "w8":
        op = cto.OpLinearQuantizerConfig(mode="linear_symmetric", dtype="int8", granularity="per_channel",
                                         weight_threshold=WEIGHT_THRESHOLD)
        out = cto.linear_quantize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
        return out, {"scheme": "w8", "weights": "int8 linear symmetric per-channel", "activations": "float16"}
    bits = int(recipe.scheme.removeprefix("palettize"))
    op = cto.OpPalettizerConfig(mode="kmeans", nbits=bits, granularity="per_tensor", weight_threshold=WEIGHT_THRESHOLD)
    out = cto.palettize_weights(mlmodel, cto.OptimizationConfig(global_config=op))
    return out, {"scheme": recipe.scheme, "weights": f"{bits}-bit k-means palette per tensor", "activations": "float16"}


def decompressed_weights(mlmodel) -> list[np.ndarray]:
    """Every weight constant of the program after decompression (what the device computes with)."""
    import coremltools.optimize.coreml as cto

    prog = cto.decompress_weights(mlmodel)._mil_program
    return [np.asarray(op.outputs[0].val, dtype=np.float32) for op in prog.functions["main"].operations
            if op.op_type == "const" and getattr(op.outputs[0], "val", None) is not None
            and np.ndim(op.outputs[0].val) >= 2 and np.size(op.outputs[0].val) >= WEIGHT_THRESHOLD]


def with_weights(module, weights: list[np.ndarray]):
    """A copy of ``module`` whose weight tensors are replaced by the closest decompressed constant
    of the same shape (the compressed program keeps PyTorch's weight layouts)."""
    import torch

    sim = copy.deepcopy(module).eval()
    pool = list(weights)
    replaced = 0
    with torch.no_grad():
        for name, p in sim.named_parameters():
            if p.ndim < 2 or p.numel() < WEIGHT_THRESHOLD:
                continue
            ref = p.detach().cpu().numpy()
            cands = [i for i, w in enumerate(pool) if w.shape == ref.shape]
            if not cands:
                continue
            best = min(cands, key=lambda i: float(np.abs(pool[i] - ref).mean()))
            p.copy_(torch.from_numpy(pool.pop(best)))
            replaced += 1
    return sim, replaced


def quantize_activations(model, calib: list[np.ndarray], learned_ranges: dict | None = None):
    """w8a8 for Core ML: a copy of ``model`` with coremltools' int8 fake quantizers (symmetric
    per-channel weights, int8 activations), calibrated by running ``calib`` through it, then
    finalized. ``learned_ranges`` (conv name -> ``{"input": [lo, hi]}``, from quantization-aware
    fine-tuning) replace the calibrated range of each tensor a conv reads. Returns the finalized
    model (trace and convert it; it is also the simulation) and what was applied."""
    require("coremltools")
    import torch
    from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

    if not calib:
        from restorekit.core.errors import BadInputError

        raise BadInputError("w8a8 quantization needs calibration images (--calib DIR)")
    # milestones: observers and fake quantization on from step 0; observers never frozen here
    config = LinearQuantizerConfig.from_dict({"global_config": {"quantization_scheme": "symmetric",
                                                                "milestones": [0, 0, 10 ** 9, 10 ** 9]}})
    quantizer = LinearQuantizer(copy.deepcopy(model).eval(), config)
    prepared = quantizer.prepare(example_inputs=(torch.from_numpy(calib[0]),))
    prepared.train()
    quantizer.step()  # applies the step-0 milestones: observers and fake quantization on
    regridded = _weights_on_int8_grid(prepared)
    with torch.no_grad():
        for t in calib:
            prepared(torch.from_numpy(t))
    prepared.eval()
    final = quantizer.finalize(inplace=False).eval()
    regridded += _functional_weights_on_int8_grid(final)
    image_ranges = _unsigned_ranges(final, calib)
    learned = _learned_input_ranges(final, learned_ranges) if learned_ranges else []
    return final, {"scheme": "w8a8", "weights": "int8 symmetric per-channel (coremltools.optimize.torch)",
                   "activations": "int8 (quantize/dequantize ops in the program)",
                   "calibration": f"coremltools LinearQuantizer observers on {len(calib)} photo tiles"
                                  + (f"; learned ranges on the inputs of {len(learned)} convs" if learned else ""),
                   "weight_grid": f"max|w| / 127 per output channel on {regridded} weights",
                   **({"unsigned_activations": image_ranges} if image_ranges else {}),
                   **({"learned_input_ranges": learned} if learned else {})}


def _learned_input_ranges(gm, ranges: dict) -> list[str]:
    """Set the activation quantizer in front of each conv that has a learned input range to that
    range (uint8 over ``[min(lo, 0), max(hi, 0)]``, the grid the fine-tuning trained against).
    The model input keeps its image grid (1/255). Returns the names of the convs set."""
    import torch

    done = []
    for node in gm.graph.nodes:
        if not (node.op == "call_function" and node.target is torch.quantize_per_tensor):
            continue
        if node.args[0].op == "placeholder" or not all(getattr(a, "op", None) == "get_attr" for a in node.args[1:3]):
            continue
        readers = {u.target for d in node.users for u in d.users if u.op == "call_module" and u.target in ranges}
        if len(readers) != 1:  # no conv with a learned range reads it, or two disagree
            continue
        name = readers.pop()
        lo, hi = ranges[name]["input"]
        lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
        scale = max(hi - lo, 1e-8) / 255.0
        getattr(gm, node.args[1].target).fill_(scale)
        getattr(gm, node.args[2].target).fill_(int(min(max(round(-lo / scale), 0), 255)))
        done.append(name)
    return done


def _weights_on_int8_grid(prepared) -> int:
    """Make every weight fake quantizer of coremltools' prepared model use the symmetric int8
    range [-127, 127], so its scale is ``max|w| / 127`` per output channel: the grid ONNX Runtime
    and LiteRT use, onto which GPTQ already rounded the weights (they then pass unchanged).
    coremltools' default [-128, 127] gives ``max|w| / 127.5``: every weight is rounded again and
    each channel's largest one is clipped to 127 steps. Returns how many quantizers were set."""
    done = 0
    for mod in prepared.modules():
        fq = getattr(mod, "weight_fake_quant", None)
        if fq is None:
            continue
        for q in (fq, getattr(fq, "activation_post_process", None)):
            if q is not None and hasattr(q, "quant_min"):
                q.quant_min, q.quant_max = -127, 127
        done += 1
    return done


def _functional_weights_on_int8_grid(gm) -> int:
    """The same grid for the weights of functional convolutions in the finalized model
    (``quantize_per_channel(weight, scale, zero_point, axis)`` on a float weight constant, such as
    a fixed upsampling kernel whose 1.0 taps the default grid stores as 127/127.5)."""
    import torch

    from restorekit.quantize.layers import int8_weight_scale

    done = 0
    for node in gm.graph.nodes:
        if node.op == "call_function" and node.target is torch.quantize_per_channel:
            w, scale = node.args[:2]
            if getattr(w, "op", None) == "get_attr" and getattr(scale, "op", None) == "get_attr":
                getattr(gm, scale.target).copy_(int8_weight_scale(getattr(gm, w.target), int(node.args[3])))
                done += 1
    return done


#: Ops that move values without changing them (a clamp after them bounds their input too).
_DATA_MOVEMENT = {"pixel_shuffle", "pixel_unshuffle", "reshape", "view", "permute", "transpose", "contiguous",
                  "flatten", "squeeze", "unsqueeze"}


def _clamp_after(node) -> float | None:
    """The upper bound ``hi`` of a ``clamp(0, hi)`` that ``node``'s value reaches through data
    movement alone, or None."""
    while len(node.users) == 1:
        node = next(iter(node.users))
        name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
        if name in ("clamp", "clip", "hardtanh"):
            args = list(node.args[1:]) + [None, None]
            lo = node.kwargs.get("min", node.kwargs.get("min_val", args[0]))
            hi = node.kwargs.get("max", node.kwargs.get("max_val", args[1]))
            ok = isinstance(lo, (int, float)) and isinstance(hi, (int, float)) and lo == 0 and hi > 0
            return float(hi) if ok else None
        if name not in _DATA_MOVEMENT and name != "dequantize":
            return None
    return None


def _unsigned_ranges(gm, calib: list[np.ndarray]) -> list[str]:
    """Put the activation quantizers of non-negative tensors on an unsigned grid (uint8, zero
    point 0), as coremltools itself does after a ReLU: the model input (restorekit's input
    contract is an image in [0, 1]: scale 1/255, the 8-bit image itself), a tensor that reaches a
    ``clamp(0, hi)`` through data movement alone (scale hi/255), and a tensor that was never
    negative on the calibration tiles (over [0, its maximum there], twice the levels). Symmetric
    calibration puts them on [-m, m] (zero point 128): half the levels of an 8-bit image.
    Returns the names of the tensors changed."""
    import torch
    from torch import fx

    quantizers = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is torch.quantize_per_tensor
                  and all(getattr(a, "op", None) == "get_attr" for a in n.args[1:3])
                  and (n.args[3] if len(n.args) > 3 else n.kwargs.get("dtype")) is torch.quint8]  # unsigned storage
    lowest: dict[str, float] = {}
    highest: dict[str, float] = {}

    class _Watch(fx.Interpreter):
        def run_node(self, n):
            if n in quantizers:
                x = self.env[n.args[0]]
                lowest[n.name] = min(lowest.get(n.name, 0.0), float(x.min()))
                highest[n.name] = max(highest.get(n.name, 0.0), float(x.max()))
            return super().run_node(n)

    def unsigned(node, hi: float) -> None:
        getattr(gm, node.args[1].target).fill_(hi / 255.0)
        getattr(gm, node.args[2].target).fill_(0)
        changed.append(str(node.args[0].name))

    changed = []
    for node in quantizers:  # ranges known from the image contract first: they shape what follows
        hi = 1.0 if node.args[0].op == "placeholder" else _clamp_after(node)
        if hi is not None:
            unsigned(node, hi)
    with torch.no_grad():
        for t in calib:
            _Watch(gm).run(torch.from_numpy(t))
    for node in quantizers:
        scale, zero = (float(getattr(gm, a.target)) for a in node.args[1:3])
        if str(node.args[0].name) not in changed and zero == 128 and lowest.get(node.name, -1.0) >= 0.0:
            unsigned(node, max(scale * 127.0, highest[node.name]))  # never narrower than calibration chose
    return changed
