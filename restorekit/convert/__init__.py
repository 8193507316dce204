"""Conversion to on-device formats; one module per target with the same signature::

    convert(model: nn.Module, spec: ModelSpec, out_path: Path, precision: str,
            tile: int, calib: list[np.ndarray] | None, recipe: Recipe | None) -> Converted

``precision`` is fp32, or a quantization scheme (``quantize.recipe.SCHEMES``; ``int8`` is w8a8)
whose :class:`~restorekit.quantize.recipe.Recipe` the target's quantizer implements.

Per-target settings are data (``restorekit.core.targets.TARGETS``), not branches scattered through the code;
the pipeline that drives these modules (preparation, mixed search, validation) is ``restorekit.build``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.bundle.manifest import TensorContract
from restorekit.core.errors import RestorekitError
from restorekit.core.targets import TARGETS


class ConversionError(RestorekitError):
    """A converter could not handle the model (an op or pattern it lacks)."""


@dataclass
class Converted:
    """A converted model file and its io contract."""

    path: Path
    input: TensorContract
    output: TensorContract
    recipe: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    decompressed_weights: list[Any] | None = None  # Core ML compressed weights, for simulation off macOS
    simulation: Any = None  # Core ML w8a8: the PyTorch model computing what the program computes


def input_contract(spec, layout: str, size: int | None) -> TensorContract:
    """The input tensor contract of ``spec``'s model for a target ``layout`` and input ``size``
    (None = dynamic): RGB in [0, 1], with the hole mask as a 4th channel for inpainting."""
    shape = [1, size, size, spec.in_channels] if layout == "NHWC" else [1, spec.in_channels, size, size]
    order = "RGBM" if spec.task == "inpaint" else "RGB"
    return TensorContract(name="input", layout=layout, dtype="float32", shape=shape, color_order=order)


def output_contract(spec, layout: str, size: int | None) -> TensorContract:
    """The output tensor contract of ``spec``'s model for a target ``layout`` and input ``size``
    (None = dynamic): an image at ``scale`` x, or a detector's raw ``[1, priors, values]``."""
    if spec.task == "detect":
        return TensorContract(name="output", layout="NPC", dtype="float32", shape=[1, None, spec.out_channels],
                              value_range=None, color_order="none")
    side = size * spec.scale if size else None
    shape = [1, side, side, spec.out_channels] if layout == "NHWC" else [1, spec.out_channels, side, side]
    order = "ab" if spec.task == "colorize" else "RGB"  # colorize: CIELAB (a*, b*) as (ab + 128) / 255
    return TensorContract(name="output", layout=layout, dtype="float32", shape=shape, color_order=order)


def recipe_for(precision: str, budget_psnr: float | None = None):
    """The built-in recipe of a precision name (None for fp32; ``int8`` is w8a8)."""
    from restorekit.quantize.recipe import builtin_recipe

    if precision == "fp32":
        return None
    return builtin_recipe("w8a8" if precision == "int8" else precision,
                          budget_psnr if precision == "mixed" else None)


def edge_model(model, target: str, split_prelus: bool = False):
    """``model`` as ``target`` exports it: a copy with the target's edge rewrites applied (or the
    model itself when it has none), and how many modules each rewrite replaced. The rewritten
    modules record whether the target's int8 multiplies by PReLU slopes in int8 (what the w8a8
    simulation and fine-tuning model). ``split_prelus`` (int8 activations only) first splits every
    other PReLU into a ReLU on doubled channels where the target runs that fast
    (``TargetProfile.int8_prelu_split``)."""
    profile = TARGETS[target]
    names = (("split_prelu",) if split_prelus and profile.int8_prelu_split else ()) + profile.rewrites
    if not names:
        return model, {}
    from restorekit.convert.rewrites import apply_rewrites

    rewritten, applied = apply_rewrites(model, names)
    for m in rewritten.modules():
        if hasattr(m, "int8_mul_slopes"):
            m.int8_mul_slopes = profile.int8_prelu_slopes
        if hasattr(m, "output_on_input_grid"):
            m.output_on_input_grid = profile.prelu_output_on_input_grid
    return rewritten, applied
