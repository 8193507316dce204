"""Conversion as the build pipeline runs it: edge rewrites, shared int8 preparation, the
mixed-precision search, then the target's converter (``restorekit.convert.<target>``)."""

from __future__ import annotations

import dataclasses
import importlib
from pathlib import Path

from restorekit.convert import ConversionError, Converted, edge_model, output_contract, recipe_for
from restorekit.core.errors import BadInputError, RestorekitError
from restorekit.core.targets import MODEL_FILES, TARGETS, check_target, targets_for


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
    import tempfile

    import numpy as np
    import torch

    from restorekit.core.metrics import psnr
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


def fp16_safety(model, target: str, recipe, calib, layers: dict[str, str]):
    """The fp16 safety check (:mod:`restorekit.quantize.fp16`) of ``model`` as ``target`` exports
    it, on the first calibration tiles: ``recipe`` with the modules to keep in fp32 (targets that
    compute fp16 in float32 keep only the layers whose weights overflow, as recipe overrides), and
    what to record in the manifest (``fp16_check``, ``fp16_kept_float``: ``{module: why}``)."""
    from restorekit.quantize.fp16 import FP16_CHECK_TILES, FP16_MAX, FP16_SAFE_LIMIT, fp16_unsafe_layers

    if not calib:
        return recipe, {"fp16_check": "not run (no calibration tiles)"}
    tiles = calib[:FP16_CHECK_TILES]
    fp16_compute = TARGETS[target].fp16_compute
    kept = fp16_unsafe_layers(model, tiles, activations=fp16_compute)
    if fp16_compute:
        how = (f"max |x| of every op's inputs and outputs on {len(tiles)} calibration tiles, limit "
               f"{FP16_SAFE_LIMIT:.0f} (fp16 max {FP16_MAX:.0f} / 8); weights and buffers against {FP16_MAX:.0f}")
        return dataclasses.replace(recipe, fp16_keep_float=kept or None), {"fp16_check": how, "fp16_kept_float": kept}
    how = (f"{target} fp16 stores fp16 weights and computes in float32: activations cannot overflow; "
           f"weights checked against {FP16_MAX:.0f}")
    kept = {n: why if n in layers else f"{why} (not a weight layer {target} can keep in float)" for n, why in kept.items()}
    names = {n: None for n in kept if n in layers}
    if names:
        recipe = dataclasses.replace(recipe, op_names={**recipe.op_names, **names})
    return recipe, {"fp16_check": how, "fp16_kept_float": kept}


def convert_model(model, spec, target: str, out_dir: Path, precision: str = "fp32", tile: int = 256,
                  calib=None, prepared=None, recipe=None, split_prelus: bool | None = None) -> Converted:
    """Convert ``model`` for ``target`` into ``out_dir/<model file>`` (the bundle's model file).

    ``recipe`` (default: the built-in one of ``precision``) says how to quantize. Integer schemes
    convert the model prepared by :func:`restorekit.quantize.prepare.prepare_for_int8` on ``calib``
    (pass ``prepared``, from :func:`prepare_for_targets`, to share preparations between targets);
    ``mixed`` first searches the layers to keep in float; ``fp16`` first finds on ``calib`` the
    layers whose values do not fit fp16 and keeps them in fp32 (:func:`fp16_safety`). ``split_prelus``
    (default: the recipe's) applies only to schemes with int8 activations and the float preparation."""
    from restorekit.quantize.recipe import quantizable_layers

    check_target(target, precision)
    if not TARGETS[target].converts(spec.task):
        raise ConversionError(f"{target} does not take {spec.task} models in this version "
                              f"(targets for {spec.task}: {', '.join(targets_for(spec.task))})")
    from restorekit.core.quiet import captured_native_output

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
    fp16_record = None
    try:
        if recipe is not None and recipe.scheme == "fp16":
            recipe, fp16_record = fp16_safety(model, target, recipe, calib, layers)
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
        if fp16_record:
            conv.recipe = {**(conv.recipe or {}), **fp16_record}
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
