"""ONNX export: opset 18, dynamic H/W, NCHW float RGB in [0, 1] (TensorRT-friendly)."""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path

import numpy as np
import torch

from restorekit.bundle.manifest import TensorContract
from restorekit.convert import Converted, input_contract, output_contract
from restorekit.models.spec import ModelSpec

OPSET = 18


def export_fp32(model: torch.nn.Module, spec: ModelSpec, path: Path, tile: int) -> None:
    """torch.export-based ONNX export with dynamic height/width (legacy exporter as fallback)."""
    size = spec.fixed_size or max(64, spec.multiple_of * 4)
    x = torch.rand(1, spec.in_channels, size, size)
    dynamic = spec.fixed_size is None
    try:
        kw = {}
        if dynamic:
            m = spec.multiple_of
            h, w = torch.export.Dim("h", min=1, max=2048), torch.export.Dim("w", min=1, max=2048)
            kw["dynamic_shapes"] = ({2: m * h, 3: m * w},) if m > 1 else ({2: h, 3: w},)
        prog = torch.onnx.export(model, (x,), input_names=["input"], output_names=["output"],
                                 opset_version=OPSET, dynamo=True, verbose=False, **kw)
        prog.save(str(path))
    except Exception:
        axes = {"input": {2: "height", 3: "width"}, "output": {2: "out_height", 3: "out_width"}} if dynamic else None
        torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["output"],
                          opset_version=17, dynamic_axes=axes, dynamo=False)
    import onnx

    onnx.checker.check_model(str(path))


def exported_input_hw(path: Path) -> tuple[int, int] | None:
    """The fixed (height, width) of an ONNX model's image input, or None when either is dynamic."""
    import onnx

    dims = onnx.load(str(path), load_external_data=False).graph.input[0].type.tensor_type.shape.dim[2:4]
    if len(dims) == 2 and all(d.HasField("dim_value") and d.dim_value > 0 for d in dims):
        return dims[0].dim_value, dims[1].dim_value
    return None


def export_model(model: torch.nn.Module, spec: ModelSpec, path: Path, tile: int) -> int | None:
    """Export fp32 ONNX; returns the fixed input side of the exported graph (None: dynamic H/W).

    A model the exporter specialises to the traced size (a branch on the input's shape, such as
    SwinIR's attention mask for its ``img_size``) is exported again at the bundle's ``tile``, which
    becomes its fixed size: the manifest says so and the runtime tiles at it."""
    export_fp32(model, spec, path, tile)
    if spec.fixed_size is not None or exported_input_hw(path) is None:
        return spec.fixed_size
    export_fp32(model, dataclasses.replace(spec, fixed_size=tile), path, tile)
    return tile


def convert(model: torch.nn.Module, spec: ModelSpec, out_path: Path, precision: str = "fp32",
            tile: int = 256, calib: list[np.ndarray] | None = None, recipe=None) -> Converted:
    """Export ``model`` to ``out_path``: fp32, or quantized by ``recipe`` (fp16, w8, QDQ w8a8/w8a16/mixed)."""
    from restorekit.convert import recipe_for
    from restorekit.quantize import onnx as qonnx
    from restorekit.quantize.recipe import quantizable_layers

    def contracts(size: int | None) -> tuple[TensorContract, TensorContract]:
        return input_contract(spec, "NCHW", size), output_contract(spec, "NCHW", size)

    recipe = recipe or recipe_for(precision)
    if recipe is None:
        contract_in, contract_out = contracts(export_model(model, spec, out_path, tile))
        return Converted(out_path, contract_in, contract_out, {"scheme": "fp32"})
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        contract_in, contract_out = contracts(export_model(model, spec, fp32, tile))
        applied = qonnx.quantize(fp32, out_path, recipe, calib, layers=quantizable_layers(model),
                                 output_range=contract_out.value_range)
    return Converted(out_path, contract_in, contract_out, applied)
