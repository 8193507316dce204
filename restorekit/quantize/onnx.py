"""ONNX quantization: fp16 (float16 weights and compute, fp32 io) and int8 QDQ (what TensorRT reads)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorekit.errors import BadInputError, require


class _TileReader:
    """onnxruntime CalibrationDataReader over calibration tiles."""

    def __init__(self, input_name: str, tiles: list[np.ndarray]):
        self._it = iter([{input_name: t} for t in tiles])

    def get_next(self):
        return next(self._it, None)


def quantize(float_model: Path, out_path: Path, precision: str, calib: list[np.ndarray] | None = None) -> dict:
    """Write a quantized copy of an fp32 ONNX model; returns the recipe applied."""
    onnx = require("onnx")
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(float_model)), keep_io_types=True)
        onnx.save(model, str(out_path))
        return {"scheme": "fp16", "weights": "float16", "activations": "float16", "io": "float32"}
    if precision == "int8":
        if not calib:
            raise BadInputError("int8 quantization needs calibration images (--calib DIR)")
        q = require("onnxruntime.quantization")
        input_name = onnx.load(str(float_model), load_external_data=False).graph.input[0].name
        q.quantize_static(
            str(float_model), str(out_path), _TileReader(input_name, calib),
            quant_format=q.QuantFormat.QDQ, per_channel=True,
            activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
            calibrate_method=q.CalibrationMethod.MinMax,
        )
        return {"scheme": "w8a8", "format": "QDQ", "weights": "int8 per-channel symmetric",
                "activations": "uint8 per-tensor", "calibration": f"minmax on {len(calib)} photo tiles"}
    raise BadInputError(f"ONNX has no precision {precision!r}")
