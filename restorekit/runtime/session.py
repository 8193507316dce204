"""The Session protocol every backend implements (onnx, tflite, coreml here; torch in models/).

A session speaks one language whatever the model file: ``run`` takes and returns NCHW float32
RGB in [0, 1]. Layout changes (NHWC) and integer quantization of inputs/outputs happen inside.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from restorekit.bundle.manifest import TensorContract


@runtime_checkable
class Session(Protocol):
    """A loaded model that maps an NCHW float32 batch to an NCHW float32 batch."""

    backend: str
    #: (height, width) the model only accepts, or None when spatial dims are dynamic.
    fixed_size: tuple[int, int] | None
    #: Where it actually runs (e.g. "onnxruntime CPUExecutionProvider").
    device: str

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on an NCHW float32 batch; returns the output in the same convention."""
        ...


class TimedSession:
    """A session whose runs add their wall time to ``clock["seconds"]`` (shared by the sessions of
    one pipeline run): the model time in a log, next to each stage's wall time."""

    def __init__(self, session: Session, clock: dict):
        self.session, self.clock = session, clock

    def run(self, x: np.ndarray) -> np.ndarray:
        """The wrapped session's ``run``, timed."""
        import time

        t0 = time.perf_counter()
        try:
            return self.session.run(x)
        finally:
            self.clock["seconds"] += time.perf_counter() - t0

    def __getattr__(self, name):  # backend, fixed_size, device, and whatever else the backend offers
        return getattr(self.session, name)


def to_model_input(x: np.ndarray, contract: TensorContract) -> np.ndarray:
    """NCHW float32 in [0, 1] -> the tensor the model file expects (layout, dtype, quantization)."""
    lo, hi = contract.value_range or (0.0, 1.0)
    if (lo, hi) != (0.0, 1.0):
        x = x * (hi - lo) + lo
    if contract.layout == "NHWC":
        x = x.transpose(0, 2, 3, 1)
    if contract.quant:
        info = np.iinfo(np.dtype(contract.dtype))
        q = np.rint(x / contract.quant["scale"] + contract.quant["zero_point"])
        return np.clip(q, info.min, info.max).astype(contract.dtype)
    return np.ascontiguousarray(x, dtype=np.dtype(contract.dtype))


def from_model_output(y: np.ndarray, contract: TensorContract) -> np.ndarray:
    """The model's output tensor -> NCHW float32 in [0, 1] scale (not clipped)."""
    if contract.quant:
        y = (y.astype(np.float32) - contract.quant["zero_point"]) * contract.quant["scale"]
    y = y.astype(np.float32, copy=False)
    if contract.layout == "NHWC":
        y = y.transpose(0, 3, 1, 2)
    lo, hi = contract.value_range or (0.0, 1.0)  # None: raw values (e.g. detector outputs), passed as they are
    if (lo, hi) != (0.0, 1.0):
        y = (y - lo) / (hi - lo)
    return np.ascontiguousarray(y)


#: ONNX Runtime's element type names -> the manifest's dtypes.
ORT_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(int8)": "int8",
              "tensor(uint8)": "uint8", "tensor(int16)": "int16"}


def check_model_tensor(declared: TensorContract, dtype: str | None, shape: list, where: str) -> None:
    """Refuse (one line) a manifest contract the model file contradicts: another element type, or
    the channels on another axis than its layout says (NHWC declared on an NCHW model). What would
    otherwise be a traceback in the runtime, or a silently wrong image."""
    from restorekit.core.errors import BadInputError

    if dtype is not None and dtype != declared.dtype:
        raise BadInputError(f"{where}: the manifest says {declared.name} is {declared.dtype}, the model file "
                            f"has {dtype}")
    if declared.layout not in ("NCHW", "NHWC") or len(shape) != 4 or len(declared.shape or []) != 4:
        return
    axis = 1 if declared.layout == "NCHW" else 3
    want, got = declared.shape[axis], shape[axis]
    if isinstance(want, int) and want != got:  # channels are never dynamic: a named dim there is H or W
        raise BadInputError(f"{where}: the manifest says {declared.name} is {declared.layout} with {want} channels, "
                            f"the model file's shape is {list(shape)}")
