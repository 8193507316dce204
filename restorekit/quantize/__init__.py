"""Quantization: recipes and calibration data, with one module per target.

``quantize/onnx.py``, ``quantize/tflite.py`` and ``quantize/coreml.py`` share one signature::

    quantize(float_model: Path, out_path: Path, precision: str, calib: list[np.ndarray]) -> dict

taking the fp32 model file the converter wrote and returning the recipe that was applied (it is
recorded in the bundle manifest). Core ML applies its precision at conversion time instead.
"""

PRECISIONS = ("fp32", "fp16", "int8")
