"""ONNX export: opset 18, dynamic H/W, NCHW float RGB in [0, 1] (TensorRT-friendly)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch

from restorekit.bundle.manifest import TensorContract
from restorekit.convert import Converted, output_contract
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


def convert(model: torch.nn.Module, spec: ModelSpec, out_path: Path, precision: str = "fp32",
            tile: int = 256, calib: list[np.ndarray] | None = None, recipe=None) -> Converted:
    """Export ``model`` to ``out_path``: fp32, or quantized by ``recipe`` (fp16, w8, QDQ w8a8/w8a16/mixed)."""
    from restorekit.convert import recipe_for
    from restorekit.quantize import onnx as qonnx
    from restorekit.quantize.recipe import quantizable_layers

    size = spec.fixed_size
    in_shape = [1, spec.in_channels, size, size]
    contract_in = TensorContract(name="input", layout="NCHW", dtype="float32", shape=in_shape)
    contract_out = output_contract(spec, "NCHW", size)
    recipe = recipe or recipe_for(precision)
    if recipe is None:
        export_fp32(model, spec, out_path, tile)
        return Converted(out_path, contract_in, contract_out, {"scheme": "fp32"})
    with tempfile.TemporaryDirectory() as tmp:
        fp32 = Path(tmp) / "fp32.onnx"
        export_fp32(model, spec, fp32, tile)
        applied = qonnx.quantize(fp32, out_path, recipe, calib, layers=quantizable_layers(model),
                                 output_range=contract_out.value_range)
    return Converted(out_path, contract_in, contract_out, applied)
