"""TFLite quantization with ai-edge-quantizer: fp16 weights, or full-integer int8 (int8 io)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorekit.errors import BadInputError, require


def quantize(float_model: Path, out_path: Path, precision: str, calib: list[np.ndarray] | None = None) -> dict:
    """Write a quantized copy of an fp32 .tflite model; returns the recipe applied."""
    aeq = require("ai_edge_quantizer")
    from ai_edge_quantizer import quantizer, recipe, recipe_manager

    qt = quantizer.Quantizer(str(float_model))
    if precision == "fp16":
        rm = recipe_manager.RecipeManager()
        rm.add_weight_only_config(regex=".*", operation_name=recipe.TFLOperationName.ALL_SUPPORTED,
                                  num_bits=16, algorithm_key=recipe.AlgorithmName.FLOAT_CASTING)
        qt.load_quantization_recipe(rm.get_quantization_recipe())
        result = qt.quantize()
        applied = {"scheme": "fp16", "weights": "float16", "activations": "float32"}
    elif precision == "int8":
        if not calib:
            raise BadInputError("int8 quantization needs calibration images (--calib DIR)")
        interp = require("ai_edge_litert.interpreter").Interpreter(model_path=str(float_model))
        (sig_key, sig), = interp.get_signature_list().items()
        in_name = sig["inputs"][0]
        shape = tuple(interp.get_input_details()[0]["shape"])
        samples = [{in_name: _fit_nhwc(t, shape)} for t in calib]
        qt.load_quantization_recipe(recipe.static_wi8_ai8())
        ranges = qt.calibrate({sig_key: samples})
        # The calibrator averages per-sample min/max, so pure black/white can fall outside the
        # int8 range of the model's input and output. Their value range is known: [0, 1].
        io_names = [interp.get_input_details()[0]["name"], interp.get_output_details()[0]["name"]]
        for name in io_names:
            if name in ranges:
                r = ranges[name]
                r["min"] = np.minimum(r["min"], 0.0).astype(np.float32)
                r["max"] = np.maximum(r["max"], 1.0).astype(np.float32)
        result = qt.quantize(ranges)
        applied = {"scheme": "w8a8", "weights": "int8", "activations": "int8", "io": "int8",
                   "calibration": f"ai-edge-quantizer min-max on {len(calib)} photo tiles"}
    else:
        raise BadInputError(f"TFLite has no precision {precision!r}")
    out_path.write_bytes(bytes(result.quantized_model))
    del aeq
    return applied


def _fit_nhwc(tile: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """NCHW calibration tile -> NHWC array of the model's static input shape (crop or pad)."""
    from restorekit.runtime.tiling import pad_to

    img = tile[0].transpose(1, 2, 0)
    h, w = int(shape[1]), int(shape[2])
    img = pad_to(img, h, w)[:h, :w]
    return np.ascontiguousarray(img[None], dtype=np.float32)
