"""Conversion to on-device formats; one module per target with the same signature::

    convert(model: nn.Module, spec: ModelSpec, out_path: Path, precision: str,
            tile: int, calib: list[np.ndarray] | None, recipe: Recipe | None) -> Converted

``precision`` is fp32, or a quantization scheme (``quantize.recipe.SCHEMES``; ``int8`` is w8a8)
whose :class:`~restorekit.quantize.recipe.Recipe` the target's quantizer implements.

Per-target settings are data (``TARGETS``), not branches scattered through the code.
"""

from __future__ import annotations

import dataclasses
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
    int8_prelu_slopes: bool = False  # int8 multiplies a rewritten PReLU's slopes as an int8 constant
    # a rewritten PReLU runs in float between Q/DQ pairs, and its output may share its input's grid
    # (fine-tuned int8: positive values are then rounded once, not twice)
    prelu_output_on_input_grid: bool = False
    # int8 with split PReLUs (``rewrites.prelu_to_split_relu``) runs as fused int8 conv + ReLU here
    int8_prelu_split: bool = False

    @property
    def edge_key(self) -> tuple:
        """What makes this target's edge model (and so its int8 preparation) differ from another's."""
        return self.rewrites, self.int8_prelu_slopes, self.prelu_output_on_input_grid, self.int8_prelu_split

    def converts(self, task: str) -> bool:
        return task in (self.tasks or IMAGE_TASKS)


_INTEGER = ("int8", "w8", "w8a8", "w8a16", "mixed")
TARGETS: dict[str, TargetProfile] = {
    # ORT's PRelu kernel is 6x slower than Max(x, Mul(x, a)); int8 keeps the Mul and Max in float
    "onnx": TargetProfile("onnx", ("fp32", "fp16") + _INTEGER, "NCHW", True, 60.0, "any OS (onnxruntime)",
                          IMAGE_TASKS + ("detect",), rewrites=("prelu",), prelu_output_on_input_grid=True,
                          int8_prelu_split=True),
    # full-integer TFLite runs the MUL + MAXIMUM in int8, the slopes one per-tensor int8 constant
    "tflite": TargetProfile("tflite", ("fp32", "fp16") + _INTEGER, "NHWC", False, 60.0, "any OS (ai-edge-litert)",
                            IMAGE_TASKS + ("detect",), rewrites=("prelu",), int8_prelu_slopes=True),
    "coreml": TargetProfile("coreml", ("fp32", "fp16", "w8", "w8a8", "palettize4", "palettize6", "palettize8"), "NCHW",
                            False, 60.0, "macOS only"),
}


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


def recipe_for(precision: str, budget_psnr: float | None = None):
    """The built-in recipe of a precision name (None for fp32; ``int8`` is w8a8)."""
    from restorekit.quantize.recipe import builtin_recipe

    if precision == "fp32":
        return None
    return builtin_recipe("w8a8" if precision == "int8" else precision,
                          budget_psnr if precision == "mixed" else None)


def open_converted(target: str, conv: Converted, threads: int | None = None):
    """A runtime session straight on a converted ONNX / TFLite file (no bundle around it yet)."""
    if target == "onnx":
        from restorekit.runtime.onnx import OnnxSession

        return OnnxSession(conv.path, conv.input, conv.output, threads=threads)
    from restorekit.runtime.tflite import TFLiteSession

    return TFLiteSession(conv.path, conv.input, conv.output, threads=threads)


def _search_mixed(module, model, spec, target: str, tile: int, calib, recipe, layers):
    """Keep the fewest most-sensitive layers in float until ``recipe.budget_psnr`` holds on the
    calibration tiles, measured on the target's own quantized model (image outputs clamped to
    their value range, as they reach the user)."""
    import dataclasses
    import tempfile

    import numpy as np
    import torch

    from restorekit.eval.metrics import psnr
    from restorekit.quantize.mixed import layer_sensitivity, search_float_layers
    from restorekit.quantize.prepare import prepare_for_int8

    sens = layer_sensitivity(model, calib, layers)
    fixed = [n for n, s in recipe.op_names.items() if s is None]
    ranking = [n for n in sorted(sens, key=sens.get) if n not in fixed]
    value_range = output_contract(spec, "NCHW", None).value_range  # what reaches the user: clamped pixels
    seen = (lambda y: np.clip(y, *value_range)) if value_range else (lambda y: y)  # noqa: E731
    with torch.inference_mode():
        refs = [seen(model(torch.from_numpy(t)).numpy()) for t in calib]

    def measure(float_layers: list[str]) -> float:
        trial = dataclasses.replace(recipe, op_names={**recipe.op_names, **{n: None for n in float_layers}})
        prepared = model
        if trial.float_preparation:
            prepared, _ = prepare_for_int8(model, calib, keep_float=frozenset(trial.float_layers(layers)),
                                           alpha=trial.equalization_alpha)
        with tempfile.TemporaryDirectory() as tmp:
            conv = module.convert(prepared, spec, Path(tmp) / MODEL_FILES[target], precision="mixed", tile=tile,
                                  calib=calib, recipe=trial)
            sess = open_converted(target, conv)
            return float(np.mean([psnr(seen(sess.run(t)), r) for t, r in zip(calib, refs)]))

    result = search_float_layers(ranking, measure, recipe.budget_psnr)
    result.sensitivity = {n: round(v, 2) for n, v in sens.items()}
    final = dataclasses.replace(recipe, op_names={**recipe.op_names, **{n: None for n in result.float_layers}})
    return final, result


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


def prepare_for_targets(model, targets, calib, finetune: dict | None = None, progress=None,
                        alpha: float | None = None, split_prelus: bool = False) -> dict:
    """One int8 float preparation (:func:`restorekit.quantize.prepare.prepare_for_int8`) per
    distinct edge-rewritten model among ``targets``, for :func:`convert_model`'s ``prepared`` (give
    it the same ``split_prelus``); ``alpha`` is the recipe's range-equalization strength (default:
    the built-in one); ``progress(label, step, loss)`` follows fine-tuning."""
    from restorekit.quantize.prepare import prepare_for_int8
    from restorekit.quantize.recipe import DEFAULT_EQUALIZATION_ALPHA

    alpha = DEFAULT_EQUALIZATION_ALPHA if alpha is None else alpha

    prepared = {}
    for target in targets:
        key = TARGETS[target].edge_key
        if key not in prepared:
            rewritten, _ = edge_model(model, target, split_prelus)
            step = None if progress is None else (lambda i, loss, t=target: progress(t, i, loss))
            prepared[key] = prepare_for_int8(rewritten, calib, finetune=finetune, progress=step, alpha=alpha)
    return prepared


def convert_model(model, spec, target: str, out_dir: Path, precision: str = "fp32", tile: int = 256,
                  calib=None, prepared=None, recipe=None, split_prelus: bool | None = None) -> Converted:
    """Convert ``model`` for ``target`` into ``out_dir/<model file>`` (the bundle's model file).

    ``recipe`` (default: the built-in one of ``precision``) says how to quantize. Integer schemes
    convert the model prepared by :func:`restorekit.quantize.prepare.prepare_for_int8` on ``calib``
    (pass ``prepared``, from :func:`prepare_for_targets`, to share preparations between targets);
    ``mixed`` first searches the layers to keep in float. ``split_prelus`` (default: the recipe's)
    applies only to schemes with int8 activations and the float preparation."""
    from restorekit.quantize.recipe import quantizable_layers

    check_target(target, precision)
    if not TARGETS[target].converts(spec.task):
        raise ConversionError(f"{target} does not take {spec.task} models in this version "
                              f"(targets for {spec.task}: {', '.join(t for t, p in TARGETS.items() if p.converts(spec.task))})")
    from restorekit.quiet import captured_native_output

    module = importlib.import_module(f"restorekit.convert.{target}")
    recipe = recipe or recipe_for(precision)
    layers = quantizable_layers(model)
    if recipe is not None:
        recipe.check(target, layers)
    split = recipe.split_prelus if split_prelus is None and recipe is not None else bool(split_prelus)
    split = split and recipe is not None and recipe.float_preparation and recipe.default.activations == "int8"
    if recipe is not None and recipe.split_prelus != (split and TARGETS[target].int8_prelu_split):
        recipe = dataclasses.replace(recipe, split_prelus=split and TARGETS[target].int8_prelu_split)  # as done
    model, applied = edge_model(model, target, split)
    mixed = None
    prep_info = None
    try:
        with captured_native_output():  # converters print progress bars and C++ logs of their own
            if recipe is not None and recipe.scheme == "mixed":
                if not calib:
                    raise BadInputError("mixed precision needs calibration images (--calib DIR)")
                recipe, mixed = _search_mixed(module, model, spec, target, tile, calib, recipe, layers)
            if recipe is not None and recipe.integer and recipe.float_preparation and calib:
                keep = frozenset(recipe.float_layers(layers))
                shared = (prepared or {}).get(TARGETS[target].edge_key)
                from restorekit.quantize.recipe import DEFAULT_EQUALIZATION_ALPHA

                alpha_used = (shared or (None, {}))[1].get("equalization_alpha", DEFAULT_EQUALIZATION_ALPHA)
                if shared is None or keep or alpha_used != recipe.equalization_alpha:
                    from restorekit.quantize.prepare import prepare_for_int8

                    shared = prepare_for_int8(model, calib, keep_float=keep, finetune=recipe.finetune,
                                              alpha=recipe.equalization_alpha)
                model, prep_info = shared
                if prep_info.get("activation_ranges"):
                    recipe = dataclasses.replace(recipe, activation_ranges=prep_info["activation_ranges"])
                    prep_info = {k: v for k, v in prep_info.items() if k != "activation_ranges"}
                    prep_info["learned_activation_ranges"] = len(recipe.activation_ranges)
            conv = module.convert(model, spec, Path(out_dir) / MODEL_FILES[target], precision=precision,
                                  tile=tile, calib=calib, recipe=recipe)
        if applied:
            conv.recipe = {**(conv.recipe or {}), "rewrites": applied}
        if prep_info:
            conv.recipe = {**(conv.recipe or {}), "float_preparation": {
                **prep_info, "how": f"cross-layer range equalization (alpha {prep_info['equalization_alpha']:g}) "
                               "+ GPTQ rounding onto the per-channel "
                               "int8 grid, on the calibration tiles"
                               + ("; then quantization-aware fine-tuning against the fp32 model, with learned "
                                  "activation ranges" if isinstance(prep_info.get("finetune"), dict) else "")}}
        if mixed is not None:
            conv.recipe = {**(conv.recipe or {}), "mixed_search": {
                "budget_psnr_db": mixed.budget_db, "met": mixed.met, "psnr_db_on_calibration": round(mixed.psnr_db, 3),
                "float_layers": mixed.float_layers, "quantized_layers": len(layers) - len(mixed.float_layers),
                "trials": mixed.trials, "sensitivity_db": mixed.sensitivity}}
        return conv
    except RestorekitError:
        raise
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
        raise ConversionError(f"{target} {precision} conversion of {spec.name} ({spec.architecture}) failed: {first}") from exc
