"""TFLite / LiteRT conversion with litert-torch: dynamic height and width where the model allows
(else the tile's static shape), NHWC input and output."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from restorekit.convert import Converted, input_contract, output_contract
from restorekit.core.errors import require
from restorekit.models.spec import ModelSpec


def export_fp32(model: torch.nn.Module, spec: ModelSpec, path: Path, tile: int) -> int | None:
    """litert_torch.convert with channel-last io; returns the fixed input side of the written graph,
    or None when its height and width are dynamic.

    A model without a fixed size is exported with dynamic height and width (multiples of its
    ``multiple_of``), so one file runs at any tile size; a model whose graph cannot be exported so
    (shapes baked into reshapes, say) is exported at ``tile`` x ``tile``, as before."""
    litert_torch = require("litert_torch")
    size = spec.fixed_size or tile
    # images in and out are channel-last; a detector's [N, priors, values] output stays as it is
    nhwc = litert_torch.to_channel_last_io(model.eval(), args=[0], outputs=[] if spec.task == "detect" else [0])
    sample = torch.rand(1, size, size, spec.in_channels)
    if spec.fixed_size is None:
        m = max(int(spec.multiple_of or 1), 1)
        h = torch.export.Dim("height", min=max(1, 16 // m), max=4096 // m)
        w = torch.export.Dim("width", min=max(1, 16 // m), max=4096 // m)
        dims = ({1: m * h, 2: m * w} if m > 1 else {1: h, 2: w},)
        try:
            from restorekit.core.quiet import captured_native_output

            with captured_native_output():
                litert_torch.convert(nhwc, (sample,), dynamic_shapes=(dims,)).export(str(path))
            interp = require("ai_edge_litert.interpreter", "runtime").Interpreter(model_path=str(path))
            if all(int(d) < 0 for d in interp.get_input_details()[0]["shape_signature"][1:3]):
                return None
        except Exception:  # noqa: BLE001 - the static export below is the answer (or raises its own error)
            pass
    litert_torch.convert(nhwc, (sample,)).export(str(path))
    return size


def convert(model: torch.nn.Module, spec: ModelSpec, out_path: Path, precision: str = "fp32",
            tile: int = 256, calib: list[np.ndarray] | None = None, recipe=None) -> Converted:
    """Convert ``model`` to ``out_path``: fp32, or quantized by ``recipe`` (fp16 weights, w8,
    full-integer w8a8, 16x8 w8a16, mixed)."""
    from restorekit.convert import recipe_for
    from restorekit.quantize import tflite as qtflite
    from restorekit.quantize.recipe import call_order, quantizable_layers

    size = spec.fixed_size or tile
    recipe = recipe or recipe_for(precision)
    if recipe is None:
        side = export_fp32(model, spec, out_path, tile)
        return Converted(out_path, input_contract(spec, "NHWC", side), output_contract(spec, "NHWC", side),
                         {"scheme": "fp32"})
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.tflite"
        side = export_fp32(model, spec, fp32, tile)
        contract_in, contract_out = input_contract(spec, "NHWC", side), output_contract(spec, "NHWC", side)
        order = call_order(model, torch.rand(1, spec.in_channels, size, size)) if recipe.op_names or recipe.op_types or recipe.activation_ranges else None
        shapes = {n: tuple(m.weight.shape) for n, m in model.named_modules()
                  if hasattr(m, "weight") and isinstance(m.weight, torch.Tensor)} if order else None
        applied = qtflite.quantize(fp32, out_path, recipe, calib, layers=quantizable_layers(model), call_order=order,
                                   weight_shapes=shapes)
    # Integer io: record the tensors' real dtype and scale/zero-point from the file.
    interp = require("ai_edge_litert.interpreter", "runtime").Interpreter(model_path=str(out_path))
    for contract, det in ((contract_in, interp.get_input_details()[0]), (contract_out, interp.get_output_details()[0])):
        contract.dtype = np.dtype(det["dtype"]).name
        if contract.dtype in ("int8", "uint8", "int16"):
            scale, zero = det["quantization"]
            contract.quant = {"scale": float(scale), "zero_point": int(zero)}
    return Converted(out_path, contract_in, contract_out, applied)
