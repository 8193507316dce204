"""Conversion to on-device formats; one module per target with the same signature::

    convert(model: nn.Module, spec: ModelSpec, out_path: Path, precision: str,
            tile: int, calib: list[np.ndarray] | None) -> Converted

Per-target settings are data (``TARGETS``), not branches scattered through the code.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.bundle.manifest import MODEL_FILES, TensorContract
from restorekit.errors import BadInputError, RestorekitError


class ConversionError(RestorekitError):
    """A converter could not handle the model (an op or pattern it lacks)."""


@dataclass(frozen=True)
class TargetProfile:
    """What a target supports and how it is validated."""

    name: str
    precisions: tuple[str, ...]
    layout: str
    dynamic_shape: bool
    min_fidelity_db: float  # fp32 conversion must reach this PSNR vs PyTorch
    runs_here: str  # where predictions can run


TARGETS: dict[str, TargetProfile] = {
    "onnx": TargetProfile("onnx", ("fp32", "fp16", "int8"), "NCHW", True, 60.0, "any OS (onnxruntime)"),
    "tflite": TargetProfile("tflite", ("fp32", "fp16", "int8"), "NHWC", False, 60.0, "any OS (ai-edge-litert)"),
    "coreml": TargetProfile("coreml", ("fp32", "fp16"), "NCHW", False, 60.0, "macOS only"),
}


@dataclass
class Converted:
    """A converted model file and its io contract."""

    path: Path
    input: TensorContract
    output: TensorContract
    recipe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)


def check_target(target: str, precision: str) -> TargetProfile:
    """Validate a (target, precision) pair before any work starts."""
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}: choose from {', '.join(TARGETS)}")
    profile = TARGETS[target]
    if precision not in profile.precisions:
        raise BadInputError(
            f"{target} does not support precision {precision!r} here: choose from {', '.join(profile.precisions)}"
        )
    return profile


def convert_model(model, spec, target: str, out_dir: Path, precision: str = "fp32", tile: int = 256,
                  calib=None) -> Converted:
    """Convert ``model`` for ``target`` into ``out_dir/<model file>`` (the bundle's model file)."""
    check_target(target, precision)
    from restorekit.quiet import captured_native_output

    module = importlib.import_module(f"restorekit.convert.{target}")
    try:
        with captured_native_output():  # converters print progress bars and C++ logs of their own
            return module.convert(model, spec, Path(out_dir) / MODEL_FILES[target], precision=precision,
                                  tile=tile, calib=calib)
    except RestorekitError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"{target} {precision} conversion of {spec.name} ({spec.architecture}) failed: {first}") from exc
