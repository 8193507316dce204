"""Quantization: recipes as data, calibration data, float preparation, mixed-precision search,
and one module per target implementing a recipe natively.

``quantize/onnx.py`` and ``quantize/tflite.py`` share one signature::

    quantize(float_model: Path, out_path: Path, recipe: Recipe, calib: list[np.ndarray] | None,
             layers: dict[str, str] | None, ...) -> dict

taking the fp32 model file the converter wrote and returning what was applied (recorded in the
bundle manifest). Core ML compresses the converted program instead (``quantize/coreml.py``).
"""
