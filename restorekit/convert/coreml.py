"""Core ML conversion: mlprogram, iOS 17, fixed tile shape (stays on the Neural Engine)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from restorekit.convert import Converted, input_contract, output_contract
from restorekit.core.errors import require
from restorekit.models.spec import ModelSpec


def convert(model: torch.nn.Module, spec: ModelSpec, out_path: Path, precision: str = "fp32",
            tile: int = 256, calib: list[np.ndarray] | None = None, recipe=None) -> Converted:
    """Trace ``model`` at a fixed tile and convert with coremltools: fp32 or fp16 compute, or fp16
    compute with compressed weights (w8, palettize4/6/8) or with int8 activations (w8a8), see
    ``quantize/coreml.py``."""
    ct = require("coremltools")
    from restorekit.convert import recipe_for

    recipe = recipe or recipe_for(precision)
    activations = recipe is not None and recipe.scheme == "w8a8"
    compressed = recipe is not None and recipe.scheme not in ("fp16", "w8a8")
    size = spec.fixed_size or tile
    x = torch.rand(1, spec.in_channels, size, size)
    simulation, act_info = None, {}
    if activations:
        from restorekit.quantize import coreml as qcoreml

        model, act_info = qcoreml.quantize_activations(model, calib, recipe.activation_ranges)
        simulation = model
    with torch.inference_mode():
        traced = torch.jit.trace(model.eval(), x)
    compute = ct.precision.FLOAT32 if recipe is None else ct.precision.FLOAT16
    if recipe is not None and recipe.fp16_keep_float:  # the fp16 safety check's layers stay fp32 (quantize.fp16)
        from restorekit.quantize.fp16 import coreml_compute_precision

        compute = coreml_compute_precision(recipe.fp16_keep_float)
    mlmodel = ct.convert(
        traced,
        inputs=[ct.TensorType(name="input", shape=tuple(x.shape), dtype=np.float32)],
        outputs=[ct.TensorType(name="output", dtype=np.float32)],
        convert_to="mlprogram",
        minimum_deployment_target=ct.target.iOS17,
        compute_precision=compute,
    )
    applied = {"scheme": precision, "compute_precision": "float32" if recipe is None else "float16", **act_info}
    if activations:
        applied["recipe"] = recipe.to_dict()
    weights = None
    if compressed:
        from restorekit.quantize import coreml as qcoreml

        mlmodel, info = qcoreml.compress(mlmodel, recipe)
        applied.update(info, recipe=recipe.to_dict())
        weights = qcoreml.decompressed_weights(mlmodel)
    mlmodel.short_description = f"restorekit {spec.name} ({spec.architecture}, x{spec.scale}, {precision})"
    mlmodel.save(str(out_path))
    contract_in, contract_out = input_contract(spec, "NCHW", size), output_contract(spec, "NCHW", size)
    return Converted(out_path, contract_in, contract_out, applied, decompressed_weights=weights, simulation=simulation)
