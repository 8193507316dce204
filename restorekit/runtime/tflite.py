"""TFLite / LiteRT backend (ai-edge-litert interpreter, XNNPACK on CPU).

Full-integer models have int8 inputs and outputs: their scale/zero-point come from the
interpreter's tensor details (the manifest records the same values).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from restorekit.bundle.manifest import Manifest, TensorContract
from restorekit.core.errors import BadInputError, require
from restorekit.core.threads import session_threads


class TFLiteSession:
    """An ai-edge-litert Interpreter behind the Session protocol (static or dynamic height and width)."""

    backend = "tflite"

    def __init__(self, model_path: Path, input: TensorContract, output: TensorContract,
                 provider: str = "cpu", threads: int | None = None):
        interp_mod = require("ai_edge_litert.interpreter", "runtime")
        from restorekit.core.quiet import captured_native_output

        # Every core unless told otherwise, as ONNX Runtime does: the interpreter's own default runs
        # XNNPACK on one thread (measured on 2 cores: the built-in fp32 model 225 vs 114 ms).
        self.threads = session_threads(threads)
        try:
            with captured_native_output():  # the interpreter logs "Created ... delegate" to stderr
                self._it = interp_mod.Interpreter(model_path=str(model_path), num_threads=self.threads)
                self._it.allocate_tensors()
        except Exception as exc:
            raise BadInputError(f"LiteRT cannot load {model_path}: {str(exc).splitlines()[0]}") from exc
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        from restorekit.runtime.session import check_model_tensor

        for declared, details in ((input, self._in), (output, self._out)):  # dtype: the file's (below)
            check_model_tensor(declared, None, [int(d) for d in details["shape"]], str(model_path))
        # The file is the truth for dtype and quantization; the manifest must agree with it.
        self.input = _contract_from_details(self._in, input)
        self.output = _contract_from_details(self._out, output)
        shape = [int(d) for d in self._in["shape_signature"]]
        hw = (shape[1], shape[2]) if input.layout == "NHWC" else (shape[2], shape[3])
        # dynamic height and width (-1): the interpreter is resized to each new input shape
        self.fixed_size = None if min(hw) < 0 else hw
        self._shape = [int(d) for d in self._in["shape"]]  # what the interpreter is allocated for
        self.device = "LiteRT CPU (XNNPACK)"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on an NCHW float32 batch; returns the output in the same convention."""
        from restorekit.runtime.session import from_model_output, to_model_input

        outs = []
        if self.fixed_size is None:
            self._fit_input(x.shape)
        for i in range(x.shape[0]):  # the interpreter has a batch of 1
            self._it.set_tensor(self._in["index"], to_model_input(x[i : i + 1], self.input))
            self._it.invoke()
            outs.append(from_model_output(self._it.get_tensor(self._out["index"]), self.output))
        return np.concatenate(outs, axis=0) if len(outs) > 1 else outs[0]

    def _fit_input(self, nchw: tuple[int, ...]) -> None:
        """Resize a dynamic-size interpreter to an NCHW batch's height and width (a no-op when it has
        them already: tiles of one photo share one size, so XNNPACK re-plans once per photo)."""
        h, w = int(nchw[2]), int(nchw[3])
        want = [1, h, w, int(nchw[1])] if self.input.layout == "NHWC" else [1, int(nchw[1]), h, w]
        if want == self._shape:  # the shape it was last resized to: no interpreter call per tile
            return
        try:
            self._it.resize_tensor_input(self._in["index"], want, strict=True)
            self._it.allocate_tensors()
        except Exception as exc:
            raise BadInputError(f"LiteRT cannot run this model at {w}x{h}: {str(exc).splitlines()[0]}") from exc
        self._in = self._it.get_input_details()[0]
        self._out = self._it.get_output_details()[0]
        self._shape = want


def _contract_from_details(details: dict, declared: TensorContract) -> TensorContract:
    dtype = np.dtype(details["dtype"]).name
    scale, zero = details["quantization"]
    quant = {"scale": float(scale), "zero_point": int(zero)} if dtype in ("int8", "uint8", "int16") else None
    return TensorContract(name=declared.name, layout=declared.layout, dtype=dtype, shape=declared.shape,
                          value_range=declared.value_range, color_order=declared.color_order, quant=quant)


def open_session(model_path: Path, manifest: Manifest, provider: str = "cpu",
                 threads: int | None = None) -> TFLiteSession:
    """Open a .tflite model file as a Session."""
    return TFLiteSession(model_path, manifest.input, manifest.output, provider=provider, threads=threads)
