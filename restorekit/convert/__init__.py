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


#: Image-to-image tasks; a ``detect`` model (face detector) outputs ``[N, priors, values]`` instead.
IMAGE_TASKS = ("sr", "restore", "face", "colorize", "inpaint", "scratch")


@dataclass(frozen=True)
class TargetProfile:
    """What a target supports and how it is validated."""

    name: str
    precisions: tuple[str, ...]
    layout: str
    dynamic_shape: bool
    min_fidelity_db: float  # fp32 conversion must reach this PSNR vs PyTorch
    runs_here: str  # where predictions can run
    tasks: tuple[str, ...] = ()  # model tasks it converts (``IMAGE_TASKS`` when empty)
    rewrites: tuple[str, ...] = ()  # edge rewrites applied before export (``convert.rewrites.REWRITES``)

    def converts(self, task: str) -> bool:
        return task in (self.tasks or IMAGE_TASKS)


TARGETS: dict[str, TargetProfile] = {
    "onnx": TargetProfile("onnx", ("fp32", "fp16", "int8"), "NCHW", True, 60.0, "any OS (onnxruntime)",
                          IMAGE_TASKS + ("detect",)),
    "tflite": TargetProfile("tflite", ("fp32", "fp16", "int8"), "NHWC", False, 60.0, "any OS (ai-edge-litert)",
                            IMAGE_TASKS + ("detect",), rewrites=("prelu",)),
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


def output_contract(spec, layout: str, size: int | None) -> TensorContract:
    """The output tensor contract of ``spec``'s model for a target ``layout`` and input ``size``
    (None = dynamic): an image at ``scale`` x, or a detector's raw ``[1, priors, values]``."""
    if spec.task == "detect":
        return TensorContract(name="output", layout="NPC", dtype="float32", shape=[1, None, spec.out_channels],
                              value_range=None, color_order="none")
    side = size * spec.scale if size else None
    shape = [1, side, side, spec.out_channels] if layout == "NHWC" else [1, spec.out_channels, side, side]
    return TensorContract(name="output", layout=layout, dtype="float32", shape=shape)


def convert_model(model, spec, target: str, out_dir: Path, precision: str = "fp32", tile: int = 256,
                  calib=None, prepared=None) -> Converted:
    """Convert ``model`` for ``target`` into ``out_dir/<model file>`` (the bundle's model file).

    int8 converts the model prepared by :func:`restorekit.quantize.prepare.prepare_for_int8` on
    ``calib``; pass ``prepared`` (its result) to share one preparation between targets."""
    check_target(target, precision)
    if not TARGETS[target].converts(spec.task):
        raise ConversionError(f"{target} does not take {spec.task} models in this version "
                              f"(targets for {spec.task}: {', '.join(t for t, p in TARGETS.items() if p.converts(spec.task))})")
    from restorekit.quiet import captured_native_output

    module = importlib.import_module(f"restorekit.convert.{target}")
    applied = {}
    if TARGETS[target].rewrites:
        from restorekit.convert.rewrites import apply_rewrites

        model, applied = apply_rewrites(model, TARGETS[target].rewrites)
    if precision == "int8" and calib:
        if prepared is None:
            from restorekit.quantize.prepare import prepare_for_int8

            prepared = prepare_for_int8(model, calib)
        model, prep_info = prepared
    else:
        prep_info = None
    try:
        with captured_native_output():  # converters print progress bars and C++ logs of their own
            conv = module.convert(model, spec, Path(out_dir) / MODEL_FILES[target], precision=precision,
                                  tile=tile, calib=calib)
        if applied:
            conv.recipe = {**(conv.recipe or {}), "rewrites": applied}
        if prep_info:
            conv.recipe = {**(conv.recipe or {}), "float_preparation": {
                **prep_info, "how": "cross-layer range equalization (alpha 0.5) + GPTQ rounding onto the per-channel "
                               "int8 grid, on the calibration tiles"}}
        return conv
    except RestorekitError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"{target} {precision} conversion of {spec.name} ({spec.architecture}) failed: {first}") from exc
