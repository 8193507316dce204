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

from restorekit.errors import require
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


def quantize_activations(model, calib: list[np.ndarray]):
    """w8a8 for Core ML: a copy of ``model`` with coremltools' int8 fake quantizers (symmetric
    per-channel weights, int8 activations), calibrated by running ``calib`` through it, then
    finalized. Returns the finalized model (trace and convert it; it is also the simulation) and
    what was applied."""
    require("coremltools")
    import torch
    from coremltools.optimize.torch.quantization import LinearQuantizer, LinearQuantizerConfig

    if not calib:
        from restorekit.errors import BadInputError

        raise BadInputError("w8a8 quantization needs calibration images (--calib DIR)")
    # milestones: observers and fake quantization on from step 0; observers never frozen here
    config = LinearQuantizerConfig.from_dict({"global_config": {"quantization_scheme": "symmetric",
                                                                "milestones": [0, 0, 10 ** 9, 10 ** 9]}})
    quantizer = LinearQuantizer(copy.deepcopy(model).eval(), config)
    prepared = quantizer.prepare(example_inputs=(torch.from_numpy(calib[0]),))
    prepared.train()
    quantizer.step()  # applies the step-0 milestones: observers and fake quantization on
    with torch.no_grad():
        for t in calib:
            prepared(torch.from_numpy(t))
    prepared.eval()
    final = quantizer.finalize(inplace=False).eval()
    return final, {"scheme": "w8a8", "weights": "int8 symmetric per-channel (coremltools.optimize.torch)",
                   "activations": "int8 (quantize/dequantize ops in the program)",
                   "calibration": f"coremltools LinearQuantizer observers on {len(calib)} photo tiles"}
