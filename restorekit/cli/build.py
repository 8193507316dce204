"""``restorekit bundle | convert | quantize | inspect``: make validated bundles of a model, and describe it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from restorekit.cli.common import ModelArg, err_console, out_console, parse_sizes, split_list

OutOpt = Annotated[Path, typer.Option("--out", help="Directory that receives <model-name>/<target>-<precision>/ bundles.")]
CalibOpt = Annotated[Optional[Path], typer.Option("--calib", help="Folder of real photos for int8 calibration (default: sample_images/).")]
EvalOpt = Annotated[Optional[Path], typer.Option("--eval-images", help="Folder of photos for validation (default: sample_images/).")]
TileOpt = Annotated[int, typer.Option("--tile", min=16, help="Fixed tile size (TFLite/Core ML input, ONNX validation).")]
TargetOpt = Annotated[str, typer.Option("--target", help="onnx, tflite or coreml.")]
Int8FinetuneOpt = Annotated[str, typer.Option("--int8-finetune", help="int8: quantization-aware fine-tuning against the fp32 model. auto: 1200 steps, only where plain w8a8 simulates below 45 dB on the calibration tiles (Real-ESRGAN Compact: about an hour per target on 2 CPU cores; the built-in model: none); off; or a number of steps.")]
Int8RangeMarginOpt = Annotated[float, typer.Option("--int8-range-margin", min=1.0, help="int8 with fine-tuning: widen the learned activation ranges by this factor (1.2: less clipping on photos with stronger edges than the calibration photos, coarser steps on all; docs/cli.md)")]
Int8AugmentOpt = Annotated[Optional[float], typer.Option("--int8-augment", min=0.0, max=1.0, show_default=False, help="int8 with fine-tuning: probability that a training crop is made grayscale, and that its contrast is raised (default 0.75: less clipping on hard black-and-white scans; 0 trains on the crops as they are; docs/cli.md)")]


def _results_table(results) -> Table:
    """One row per bundle: fidelity (or the faces a detector finds), error, latency, size, gate."""
    table = Table(title="bundles")
    for col, just in (("", "center"), ("bundle", "left"), ("fidelity", "right"), ("max |diff|", "right"),
                      ("p50 ms", "right"), ("ref p50 ms", "right"), ("KiB", "right"), ("check", "left")):
        table.add_column(col, justify=just, no_wrap=col != "check")
    for r in results:
        m = r.manifest.metrics
        v = bool(m.get("validated"))
        if not v:
            fidelity, check = "–", "structure ✓" if r.passed else "structure ✗"
        elif r.manifest.task == "detect":  # a detector: the faces it finds, not pixels
            iou = m.get("mean_box_iou")
            fidelity = f"faces {m['faces_matched']}/{m['faces_reference']}, IoU {'–' if iou is None else f'{iou:.3f}'}"
            check = f"same faces, IoU >= {m['min_box_iou']:g}"
        else:
            fidelity = f"{m['fidelity_psnr_db']:.1f}/{m['fidelity_psnr_min_db']:.1f} dB"
            check = f">= {m['min_fidelity_db']:.0f} dB"
        table.add_row(
            Text("✓", style="green") if r.passed else Text("✗", style="red"), f"{r.target}-{r.precision}", fidelity,
            f"{m['max_abs_err']:.1e}" if v else "–",
            f"{m['latency_ms_p50']:.1f}" if v else "–",
            f"{m['reference_latency_ms_p50']:.1f}" if v else "–",
            f"{sum(f['bytes'] for f in r.manifest.files) / 1024:.0f}",
            check,
        )
    return table


def _report(results) -> None:
    """Print the results table and notes; exit 1 when a bundle missed its quality gate."""
    out_console.print(_results_table(results))
    for r in results:
        if not r.manifest.metrics.get("validated"):
            out_console.print(f"{r.target}-{r.precision}: {r.detail}; {r.manifest.metrics.get('not_validated_reason')}",
                              soft_wrap=True)
        elif not r.passed:  # why: the bar missed, or an output-sanity check (flat, colour cast) naming the image
            out_console.print(f"{r.target}-{r.precision}: {r.detail}", soft_wrap=True, highlight=False)
    model_dir = results[0].path.parent
    out_console.print(f"report: {model_dir / 'report.json'}  {model_dir / 'report.html'}")
    failed = [f"{r.target}-{r.precision}" for r in results if not r.passed]
    if failed:
        err_console.print(Text.assemble(("quality gate failed:", "bold red"), f" {', '.join(failed)}"))
        raise typer.Exit(1)


def _build(model, targets, precisions, calib, eval_images, out, tile, int8_finetune: str = "auto",
           int8_range_margin: float = 1.0, int8_augment: float | None = None) -> None:
    """Build the bundles of the built-in int8 recipe (fine-tune settings checked before any work) and report."""
    from restorekit.build.bundles import build_bundles
    from restorekit.quantize.recipe import int8_finetune as finetune_settings

    finetune = finetune_settings(int8_finetune, int8_range_margin, int8_augment)
    results = build_bundles(model, out, targets=targets, precisions=precisions, calib_dir=calib,
                            eval_dir=eval_images, tile=tile, console=err_console, int8_finetune=finetune)
    _report(results)


def bundle(
    model: ModelArg = None,
    targets: Annotated[str, typer.Option("--targets", help="Comma-separated: onnx,tflite,coreml.")] = "onnx,tflite,coreml",
    precisions: Annotated[Optional[str], typer.Option("--precisions", help="Comma-separated: fp32,fp16,int8 (default: all each target supports).")] = None,
    calib: CalibOpt = None,
    eval_images: EvalOpt = None,
    out: OutOpt = Path("bundles"),
    tile: TileOpt = 256,
    int8_finetune: Int8FinetuneOpt = "auto",
    int8_range_margin: Int8RangeMarginOpt = 1.0,
    int8_augment: Int8AugmentOpt = None,
):
    """Build validated bundles for every target and precision (the main job). Without MODEL: the
    built-in restorer, and the shipped scratch detector (fp32) that the default pipeline needs."""
    _build(model, split_list(targets, "--targets"), split_list(precisions, "--precisions"), calib, eval_images, out, tile, int8_finetune,
           int8_range_margin, int8_augment)
    if model is None:  # a torch-free box runs `restore --bundles OUT` with these alone
        from restorekit.models.builtin import SCRATCH_WEIGHTS

        _build(str(SCRATCH_WEIGHTS), split_list(targets, "--targets"), ["fp32"], calib, eval_images, out, tile, "off")


def convert(
    model: ModelArg = None,
    target: TargetOpt = "onnx",
    precision: Annotated[str, typer.Option("--precision", help="fp32, fp16 or int8.")] = "fp32",
    calib: CalibOpt = None,
    eval_images: EvalOpt = None,
    out: OutOpt = Path("bundles"),
    tile: TileOpt = 256,
    int8_finetune: Int8FinetuneOpt = "auto",
    int8_range_margin: Int8RangeMarginOpt = 1.0,
    int8_augment: Int8AugmentOpt = None,
):
    """Convert one model to one target and precision, validated, as a bundle."""
    _build(model, [target], [precision], calib, eval_images, out, tile, int8_finetune, int8_range_margin, int8_augment)


def quantize(
    model: ModelArg = None,
    target: TargetOpt = "onnx",
    scheme: Annotated[str, typer.Option("--scheme", help="fp16, w8, w8a8, w8a16, mixed (onnx/tflite); fp16, w8, w8a8, palettize4/6/8 (coreml).")] = "w8a8",
    recipe_file: Annotated[Optional[Path], typer.Option("--recipe", help="YAML/JSON recipe (scheme + per-layer overrides); replaces --scheme.")] = None,
    budget_psnr: Annotated[Optional[float], typer.Option("--budget-psnr", help="mixed: fidelity (dB vs fp32) to reach on the calibration tiles (default 45).")] = None,
    calib_count: Annotated[Optional[int], typer.Option("--calib-count", min=1, help="Calibration tiles (default 16).")] = None,
    finetune_steps: Annotated[Optional[int], typer.Option("--finetune-steps", min=1, help="w8a8/mixed: quantization-aware fine-tuning steps against the fp32 model, with learned activation ranges (minutes on CPU; off by default).")] = None,
    calib: CalibOpt = None,
    eval_images: EvalOpt = None,
    out: OutOpt = Path("bundles"),
    tile: TileOpt = 256,
):
    """Quantize a model for one target with a recipe, calibrated on real photos, as a validated bundle."""
    from restorekit.build.bundles import build_bundles
    from restorekit.quantize.recipe import command_recipe

    recipe = command_recipe(target, scheme, recipe_file, budget_psnr, calib_count, finetune_steps)
    results = build_bundles(model, out, targets=[target], precisions=[recipe.scheme], calib_dir=calib,
                            eval_dir=eval_images, tile=tile, console=err_console, recipe=recipe)
    _report(results)


def inspect(
    model: ModelArg = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Input size HxW for the MACs count and the trace (default: 64x64, or the model's fixed size).")] = None,
):
    """Describe a model: architecture, task, scale, params, MACs, and what each target makes of it."""
    from restorekit.convert.compat import compatibility
    from restorekit.models.loader import load_model

    hw = parse_sizes(size)[0] if size else None
    loaded = load_model(model)
    spec = loaded.spec
    table = Table(title=spec.name, show_header=False)
    table.add_column("field", no_wrap=True)
    table.add_column("value", overflow="fold")
    for k, v in spec.to_dict().items():
        table.add_row(k, f"{v / 1e9:.2f} G" if k == "macs_per_megapixel" else f"{v:,}" if k == "params" else str(v))
    if hw is not None:
        macs = spec.macs_per_megapixel * hw[0] * hw[1] / 1e6  # fully convolutional: MACs scale with the pixels
        table.add_row(f"MACs at {hw[0]}x{hw[1]}", f"{macs / 1e9:.2f} G")
    out_console.print(table)
    compat = Table(title=f"{spec.name}: per-target compatibility (static analysis of the traced graph; "
                         "`restorekit bundle` measures)")
    for col in ("target", "", "findings"):
        compat.add_column(col, overflow="fold", no_wrap=col != "findings")
    for r in compatibility(loaded.module, spec, hw):
        compat.add_row(r.target, r.mark, "\n".join(r.findings))
    out_console.print(compat)
