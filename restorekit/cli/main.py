"""``restorekit`` command line. Heavy imports happen inside commands so ``--help`` is instant."""

from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from restorekit.cli.common import err_console, out_console, user_errors
from restorekit.cli.distill_cmd import distill_command
from restorekit.cli.zoo import zoo_app
from restorekit.core.errors import RestorekitError

app = typer.Typer(
    name="restorekit",
    help="Put photo-restoration networks on devices: convert, quantize, bundle, run and validate "
    "for ONNX (TensorRT), TFLite/LiteRT and Core ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(zoo_app, name="zoo")
app.command("distill")(user_errors(distill_command))

# Options declared once and reused.
ModelArg = Annotated[Optional[str], typer.Argument(help="Checkpoint (.pth/.pt/.ckpt/.safetensors), a zoo name (restorekit zoo list) or 'default' (the built-in model).")]
OutOpt = Annotated[Path, typer.Option("--out", help="Directory that receives <model-name>/<target>-<precision>/ bundles.")]
CalibOpt = Annotated[Optional[Path], typer.Option("--calib", help="Folder of real photos for int8 calibration (default: sample_images/).")]
EvalOpt = Annotated[Optional[Path], typer.Option("--eval-images", help="Folder of photos for validation (default: sample_images/).")]
TileOpt = Annotated[int, typer.Option("--tile", min=16, help="Fixed tile size (TFLite/Core ML input, ONNX validation).")]
Int8FinetuneOpt = Annotated[str, typer.Option("--int8-finetune", help="int8: quantization-aware fine-tuning against the fp32 model. auto: 1200 steps, only where plain w8a8 simulates below 45 dB on the calibration tiles (Real-ESRGAN Compact: about 20 min per target on 2 CPU cores; the built-in model: none); off; or a number of steps.")]
Int8RangeMarginOpt = Annotated[float, typer.Option("--int8-range-margin", min=1.0, help="int8 with fine-tuning: widen the learned activation ranges by this factor (1.2: less clipping on photos with stronger edges than the calibration photos, coarser steps on all; docs/benchmarks.md).")]
Int8AugmentOpt = Annotated[Optional[float], typer.Option("--int8-augment", min=0.0, max=1.0, show_default=False, help="int8 with fine-tuning: probability that a training crop is made grayscale, and that its contrast is raised (default 0.75: less clipping on hard black-and-white scans; 0 trains on the crops as they are; docs/benchmarks.md).")]


def _split(value: str | None) -> list[str] | None:
    return [v.strip() for v in value.split(",") if v.strip()] if value else None


def _results_table(results) -> Table:
    table = Table(title="bundles")
    for col, just in (("", "center"), ("bundle", "left"), ("fidelity", "right"), ("max |diff|", "right"),
                      ("p50 ms", "right"), ("ref p50 ms", "right"), ("KiB", "right"), ("check", "left")):
        table.add_column(col, justify=just, no_wrap=col != "check")
    for r in results:
        m = r.manifest.metrics
        v = bool(m.get("validated"))
        detect = r.manifest.task == "detect"
        if not v:
            fidelity, check = "–", "structure ✓" if r.passed else "structure ✗"
        elif detect:  # a detector: the faces it finds, not pixels
            iou = m.get("mean_box_iou")
            fidelity = f"faces {m['faces_matched']}/{m['faces_reference']}, IoU {'–' if iou is None else f'{iou:.3f}'}"
            check = f"same faces, IoU >= {m['min_box_iou']:g}"
        else:
            fidelity = f"{m['fidelity_psnr_db']:.1f}/{m['fidelity_psnr_min_db']:.1f} dB"
            check = f">= {m['min_fidelity_db']:.0f} dB"
        table.add_row(
            "[green]✓[/]" if r.passed else "[red]✗[/]", f"{r.target}-{r.precision}", fidelity,
            f"{m['max_abs_err']:.1e}" if v else "–",
            f"{m['latency_ms_p50']:.1f}" if v else "–",
            f"{m['reference_latency_ms_p50']:.1f}" if v else "–",
            f"{sum(f['bytes'] for f in r.manifest.files) / 1024:.0f}",
            check,
        )
    return table


def _int8_finetune(value: str, range_margin: float = 1.0, augment: float | None = None) -> dict | None:
    """``--int8-finetune``: auto (fine-tune where plain w8a8 simulates below 45 dB), off, or a step
    count; ``--int8-range-margin`` and ``--int8-augment`` (None: the default's) join the settings."""
    from restorekit.quantize.recipe import INT8_FINETUNE

    if not math.isfinite(range_margin):
        raise RestorekitError(f"--int8-range-margin must be a finite number, not {range_margin}")
    if augment is not None and not 0.0 <= augment <= 1.0:  # also NaN
        raise RestorekitError(f"--int8-augment is a probability from 0 to 1, not {augment}")
    extra = {**({"range_margin": range_margin} if range_margin != 1.0 else {}),
             **({"augment": augment} if augment is not None else {})}
    if value == "off":
        changes = [f for f, k in (("--int8-range-margin", "range_margin"), ("--int8-augment", "augment")) if extra.get(k)]
        if changes:  # a setting that would change a training that does not run
            verb = "set" if len(changes) > 1 else "sets"
            raise RestorekitError(f"{' and '.join(changes)} {verb} how fine-tuning runs: it needs --int8-finetune "
                                  "auto or a number of steps, not off")
        return None
    if value == "auto":
        return {**INT8_FINETUNE, **extra}
    if value.isdigit() and int(value) > 0:  # the default training, that many steps, whatever plain w8a8 gives
        return {**{k: v for k, v in INT8_FINETUNE.items() if k != "below_psnr"}, "steps": int(value), **extra}
    raise RestorekitError(f"--int8-finetune takes auto, off or a positive number of steps, not {value!r}")


def _build(model, targets, precisions, calib, eval_images, out, tile, int8_finetune: str = "auto",
           int8_range_margin: float = 1.0, int8_augment: float | None = None) -> None:
    from restorekit.build.bundles import build_bundles

    finetune = _int8_finetune(int8_finetune, int8_range_margin, int8_augment)  # a bad value fails before any work
    results = build_bundles(model, out, targets=targets, precisions=precisions, calib_dir=calib,
                            eval_dir=eval_images, tile=tile, console=err_console, int8_finetune=finetune)
    _report(results)


def _report(results) -> None:
    """Print the results table and notes; exit 1 when a bundle missed its quality gate."""
    out_console.print(_results_table(results))
    for r in results:
        if not r.manifest.metrics.get("validated"):
            out_console.print(f"{r.target}-{r.precision}: {r.detail}; {r.manifest.metrics.get('not_validated_reason')}",
                              soft_wrap=True)
    model_dir = results[0].path.parent
    out_console.print(f"report: {model_dir / 'report.json'}  {model_dir / 'report.html'}")
    failed = [f"{r.target}-{r.precision}" for r in results if not r.passed]
    if failed:
        err_console.print(f"[bold red]quality gate failed:[/] {', '.join(failed)}")
        raise typer.Exit(1)


@app.command()
@user_errors
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
    """Build validated bundles for every target and precision (the main job)."""
    _build(model, _split(targets), _split(precisions), calib, eval_images, out, tile, int8_finetune, int8_range_margin,
           int8_augment)


@app.command()
@user_errors
def convert(
    model: ModelArg = None,
    target: Annotated[str, typer.Option("--target", help="onnx, tflite or coreml.")] = "onnx",
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


@app.command()
@user_errors
def quantize(
    model: ModelArg = None,
    target: Annotated[str, typer.Option("--target", help="onnx, tflite or coreml.")] = "onnx",
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
    from restorekit.quantize.recipe import SCHEMES, builtin_recipe, load_recipe, recipe_from_dict

    if recipe_file is not None:
        recipe = load_recipe(recipe_file)
        if budget_psnr is not None:
            recipe = recipe_from_dict({**recipe.to_dict(), "budget_psnr": budget_psnr})
    else:
        if scheme not in SCHEMES:
            raise RestorekitError(f"unknown scheme {scheme!r}: choose from {', '.join(SCHEMES)}")
        recipe = builtin_recipe(scheme, budget_psnr)
    if calib_count is not None:
        recipe.calibration["tiles"] = calib_count
    if finetune_steps is not None:
        recipe = recipe_from_dict({**recipe.to_dict(), "finetune": {**(recipe.finetune or {}), "steps": finetune_steps}})
    from restorekit.core.targets import TARGETS

    if target not in TARGETS:
        raise RestorekitError(f"unknown target {target!r}: choose from {', '.join(TARGETS)}")
    recipe.check(target)
    from restorekit.build.bundles import build_bundles

    results = build_bundles(model, out, targets=[target], precisions=[recipe.scheme], calib_dir=calib,
                            eval_dir=eval_images, tile=tile, console=err_console, recipe=recipe)
    _report(results)


@app.command()
@user_errors
def run(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory (with manifest.json).")],
    input: Annotated[Path, typer.Argument(help="Photo to restore (PNG/JPEG/TIFF; 8/16-bit, gray, RGB, RGBA).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output image (.png/.jpg/.tif).")],
    tile: Annotated[Optional[int], typer.Option("--tile", min=0, help="Tile size (0 = whole image; fixed-shape bundles always use their own).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="Pixels shared by neighbouring tiles (feathered).")] = None,
    provider: Annotated[str, typer.Option("--provider", help="cpu, cuda or tensorrt (ONNX bundles).")] = "cpu",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")] = None,
):
    """Run a bundle on one photo, tiled with feathered blending."""
    from rich.progress import Progress

    from restorekit.runtime import load_bundle
    from restorekit.core.image import check_output_path, read_image, write_image

    check_output_path(output)
    photo = read_image(input)
    b = load_bundle(bundle_dir, provider=provider, threads=threads)
    if provider == "tensorrt" and b.manifest.target == "onnx" and tile is not None:
        from restorekit.runtime.tensorrt import engine_plan

        plan = engine_plan(b.manifest)
        if not plan.min_hw[0] <= tile <= plan.max_hw[0]:
            raise RestorekitError(f"with --provider tensorrt the tile must be {plan.min_hw[0]}..{plan.max_hw[0]} "
                                  f"(the engine's optimisation profile), not {tile or 'whole image'}")
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(f"{b.manifest.name} ({b.session.device})", total=None)
        result = b.restore_photo(photo, tile=tile, overlap=overlap,
                                 on_tile=lambda d, t: progress.update(task, completed=d, total=t))
    write_image(output, result.rgb, result.alpha, bit_depth=16 if photo.bit_depth == 16 else 8, gray=photo.was_gray)
    h, w = result.size
    out_console.print(f"wrote {output} ({w}x{h}{', alpha kept' if result.alpha is not None else ''})")


def _fits_stage(task: str, scale: int, need: str) -> bool:
    """Whether a model of ``task`` at ``scale`` can serve a stage that needs ``need``: an SR model
    restores too, a restoration model that upscales serves the sr stage, and any restoration
    model can restore aligned faces."""
    return (task == need or (need == "restore" and task == "sr") or (need == "sr" and task == "restore" and scale > 1)
            or (need == "face" and task in ("restore", "sr")))


def _pipeline_model(ref: Optional[str], task: str, provider: str, threads: Optional[int]):
    """A pipeline Model from a bundle directory, a checkpoint, or (None) restorekit's own weights."""
    from restorekit.restore.pipeline import Model

    if ref is not None and Path(ref).is_dir():
        from restorekit.runtime import load_bundle

        b = load_bundle(ref, provider=provider, threads=threads)
        if not _fits_stage(b.manifest.task, b.manifest.scale, task):
            raise RestorekitError(f"{ref} is a {b.manifest.task} bundle; this stage needs a {task} model")
        t = b.manifest.tiling
        return Model(b.session, f"{b.manifest.name} {b.manifest.target}-{b.manifest.precision} ({b.session.device})",
                     b.manifest.scale, t.get("tile"), t.get("overlap", 32), t.get("multiple_of", 1))
    try:
        from restorekit.models.loader import load_model
        from restorekit.models.reference import TorchSession
    except ImportError:
        raise RestorekitError(f"no {task} model: pass a bundle directory (restorekit's own PyTorch weights need "
                              "restorekit[all])") from None
    if ref is None and task == "scratch":
        from restorekit.models.builtin import SCRATCH_WEIGHTS

        ref = str(SCRATCH_WEIGHTS)
    loaded = load_model(ref)
    if not _fits_stage(loaded.spec.task, loaded.spec.scale, task):
        raise RestorekitError(f"{loaded.spec.name} is a {loaded.spec.task} model; this stage needs a {task} model")
    session = TorchSession(loaded.module)
    return Model(session, f"{loaded.spec.name} ({session.device})", loaded.spec.scale,
                 512 if task == "scratch" else 256, 32, loaded.spec.multiple_of)


def _stage_fidelity(v: dict) -> str:
    """One cell: how an edge stage compares with its reference (PSNR, mask IoU, or the faces found)."""
    if "faces_reference" in v:
        iou = "–" if v["mean_box_iou"] is None else f"{v['mean_box_iou']:.3f}"
        lm = "" if v["max_landmark_err_px"] is None else f", landmarks ≤ {v['max_landmark_err_px']:.2f} px"
        return f"faces {v['matched']}/{v['faces_reference']} matched ({v['faces_bundle']} found), box IoU {iou}{lm}"
    return f"{v['psnr_db']:.2f} dB" + (f", mask IoU {v['mask_iou']:.4f}" if "mask_iou" in v else "")


@app.command()
@user_errors
def restore(
    input: Annotated[Path, typer.Argument(help="A photo, or a folder of photos.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output image, or output folder for a folder input.")],
    bundle: Annotated[Optional[str], typer.Option("--bundle", help="Restoration bundle (or checkpoint); default: the built-in model in PyTorch.")] = None,
    detector: Annotated[Optional[str], typer.Option("--detector", help="Scratch-detector bundle (or checkpoint); default: the shipped ScratchUNet in PyTorch.")] = None,
    face_detector: Annotated[Optional[str], typer.Option("--face-detector", help="RetinaFace-MobileNet0.25: a detect bundle, or its weights (.pth) run in PyTorch. Enables the faces stage.")] = None,
    face_model: Annotated[Optional[str], typer.Option("--face-model", help="Face restorer for aligned 512x512 faces: a face bundle (GFPGAN/CodeFormer) or checkpoint; default: the restoration model.")] = None,
    strength: Annotated[float, typer.Option("--strength", help="Faces: blend of the restored face with the input (0.5-0.9 typical).")] = 0.7,
    sr: Annotated[Optional[str], typer.Option("--sr", help="Super-resolution bundle (or checkpoint) for the sr stage, e.g. a Real-ESRGAN x4 bundle: restoration then runs at the input's size and this model upscales.")] = None,
    stages: Annotated[str, typer.Option("--stages", help="Comma-separated: defects, restore, faces, tone, cast, sr.")] = "defects,restore,faces,tone,cast,sr",
    scale: Annotated[int, typer.Option("--scale", help="Output size: 1 = as the input, 2 = twice (the built-in model), up to the --sr model's scale.")] = 1,
    colorize: Annotated[bool, typer.Option("--colorize", help="Colorize (needs a colorization model: none ships yet; the stage is then reported skipped).")] = False,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="Also write original | result side by side (single photo).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the log of every stage as JSON.")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Also run the restoration, scratch-detection, face-detection and sr stages with their full-precision PyTorch references; report each stage's fidelity and latency.")] = False,
    provider: Annotated[str, typer.Option("--provider", help="ONNX bundles: cpu, cuda or tensorrt.")] = "cpu",
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="CPU threads (default: all cores).")] = None,
):
    """Restore old photos: damage assessment, scratch removal, restoration, faces, tone and colour cast."""
    import json

    from rich.progress import Progress

    from restorekit.core.files import atomic_write_text, check_writable_path
    from restorekit.core.image import IMAGE_SUFFIXES, check_output_path, read_image, write_image
    from restorekit.restore.pipeline import RestoreOptions, check_scale, restore_photo, side_by_side

    opts = RestoreOptions(stages=tuple(x.strip() for x in stages.split(",") if x.strip()), scale=scale,
                          colorize=colorize, face_strength=strength)
    if not input.exists():
        raise RestorekitError(f"input not found: {input}")
    folder = input.is_dir()
    if folder:
        if compare is not None:
            raise RestorekitError("--compare is for a single photo")
        if not output.parent.is_dir():
            raise RestorekitError(f"output directory does not exist: {output.parent}")
        # like list_images, but a dangling link is kept so it is reported as a failure, not skipped
        jobs = [(p, output / p.name) for p in sorted(input.iterdir())
                if (p.is_file() or p.is_symlink()) and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
    else:
        check_output_path(output)
        jobs = [(input, output)]
    for path in (compare, json_path):
        if path is not None:
            check_writable_path(path)
    restorer = _pipeline_model(bundle, "restore", provider, threads) if "restore" in opts.stages else None
    finder = _pipeline_model(detector, "scratch", provider, threads) if "defects" in opts.stages else None
    faces_model = None
    if face_detector is not None and "faces" in opts.stages:
        if not Path(face_detector).exists():
            raise RestorekitError(f"face detector not found: {face_detector} (a detect bundle directory or "
                                  "RetinaFace-MobileNet0.25 weights)")
        faces_model = _pipeline_model(face_detector, "detect", provider, threads)
    upscaler = _pipeline_model(sr, "sr", provider, threads) if sr is not None and "sr" in opts.stages else None
    face_fixer = (_pipeline_model(face_model, "face", provider, threads)
                  if face_model is not None and faces_model is not None else None)
    check_scale(opts, restorer, upscaler)
    references = {}
    if reference:
        for stage, model, ref_of, task in (("restore", restorer, bundle, "restore"), ("defects", finder, detector, "scratch"),
                                           ("face-detect", faces_model, face_detector, "detect"), ("sr", upscaler, sr, "sr")):
            if model is None:
                continue
            if ref_of is not None and Path(ref_of).is_dir():  # a bundle: its source checkpoint in PyTorch
                from restorekit.bundle.manifest import read_manifest

                references[stage] = _pipeline_model(_default_reference(read_manifest(ref_of)), task, "cpu", threads)
            else:
                references[stage] = model  # already the full-precision model: the comparison is exact

    if folder:
        output.mkdir(exist_ok=True)  # only now that every model loaded: a failed start leaves nothing behind
    logs, failures, skipped = [], [], []
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("restore", total=len(jobs))
        for src, dst in jobs:
            progress.update(task, description=src.name)
            if folder and dst.exists():
                skipped.append(src.name)  # outputs are written atomically: present means finished
                progress.advance(task)
                continue
            try:
                photo = read_image(src)
                result = restore_photo(photo, restorer, finder, opts,
                                       on_stage=lambda st: progress.update(task, description=f"{src.name}: {st}"),
                                       face_detector=faces_model, references=references, upscaler=upscaler,
                                       face_restorer=face_fixer)
                write_image(dst, result.photo.rgb, result.photo.alpha,
                            bit_depth=16 if photo.bit_depth == 16 else 8, gray=photo.was_gray)
                if compare is not None:
                    write_image(compare, side_by_side(photo.rgb, result.photo.rgb))
                logs.append({"input": str(src), "output": str(dst), **result.log})
                for st in result.log["stages"]:
                    if st["stage"] == "colorize" and colorize:
                        err_console.print(f"{src.name}: colorize skipped: {st['reason']}")
            except RestorekitError as exc:
                if not folder:
                    raise
                failures.append((src.name, str(exc)))
            progress.advance(task)
    for entry in logs:
        ran = [s["stage"] for s in entry["stages"] if s["ran"]]
        faces = next((s["found"] for s in entry["stages"] if s["stage"] == "faces" and s["ran"]), None)
        out_console.print(f"wrote {entry['output']} ({entry['output_size'][1]}x{entry['output_size'][0]}; "
                          f"{', '.join(ran)}" + (f"; faces found {faces['count']}, enhanced {faces['enhanced']}"
                                                 if faces else "") + ")")
    if reference and logs:
        table = Table(title="edge stages vs their full-precision references (same stage input)")
        for col in ("photo", "stage", "edge", "reference", "fidelity", "edge s", "reference s"):
            table.add_column(col, justify="right" if col.endswith(" s") else "left")
        for entry in logs:
            for st in entry["stages"]:
                v = st.get("vs_reference")
                if v:
                    table.add_row(Path(entry["input"]).name, st["stage"], st["backend"], v["backend"], _stage_fidelity(v),
                                  f"{v['edge_seconds']:.2f}", f"{v['reference_seconds']:.2f}")
        out_console.print(table)
    if json_path:
        atomic_write_text(json_path, json.dumps({"schema_version": 1, "kind": "restorekit.restore",
                                                 "restorer": restorer.name if restorer else None,
                                                 "detector": finder.name if finder else None,
                                                 "photos": logs, "skipped_finished": skipped,
                                                 "failed": [{"input": n, "error": e} for n, e in failures]},
                                                indent=2) + "\n")
    if skipped:
        out_console.print(f"skipped {len(skipped)} already restored: {', '.join(skipped)}")
    if failures:
        err_console.print(f"[bold red]{len(failures)} of {len(jobs)} photos failed:[/]")
        for name, err in failures:
            err_console.print(f"  ✗ {name}: {err}", highlight=False)
        raise typer.Exit(2)


@app.command("eval")
@user_errors
def eval_(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="A bundle directory.")],
    images: Annotated[Path, typer.Option("--images", help="Folder of real photos.")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference checkpoint (default: the one the bundle was made from, when it is the built-in model).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON (stable keys, schema_version).")] = None,
    html_path: Annotated[Optional[Path], typer.Option("--html", help="Write a self-contained HTML report (images and plots embedded).")] = None,
    min_psnr: Annotated[Optional[float], typer.Option("--min-psnr", help="Gate: every image and the mean >= this (dB).")] = None,
    min_ssim: Annotated[Optional[float], typer.Option("--min-ssim", help="Gate: every image and the mean >= this.")] = None,
    max_nonfinite: Annotated[Optional[int], typer.Option("--max-nonfinite", help="Gate: at most this many NaN/inf output values.")] = None,
    max_delta_e: Annotated[Optional[float], typer.Option("--max-delta-e", help="Gate: mean CIEDE2000 of every image <= this.")] = None,
    max_clipped_new: Annotated[Optional[int], typer.Option("--max-clipped-new", help="Gate: at most this many newly clipped pixels.")] = None,
    baseline: Annotated[Optional[Path], typer.Option("--baseline", help="An earlier `eval --json` result to compare with.")] = None,
    max_drop: Annotated[Optional[float], typer.Option("--max-drop", help="Gate with --baseline: PSNR may drop at most this (dB), per image and mean (default 0).")] = None,
    policy: Annotated[Optional[Path], typer.Option("--policy", help="YAML/JSON file of per-bundle gates (command-line gates override it).")] = None,
    clean: Annotated[bool, typer.Option("--clean", help="The images are clean originals: also score reference and bundle against them after synthetic degradation (seed 0).")] = False,
    count: Annotated[int, typer.Option("--count", min=1, help="Number of photos to use.")] = 8,
    size: Annotated[Optional[int], typer.Option("--size", min=16, help="Crop side (default: the bundle's tile).")] = None,
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs for latency.")] = 10,
    provider: Annotated[str, typer.Option("--provider", help="cpu, cuda or tensorrt.")] = "cpu",
):
    """Fidelity of a bundle vs its fp32 reference, quality, latency; gates exit 1 listing every failure."""
    import json

    from restorekit.eval.evaluate import evaluate
    from restorekit.eval.gates import Gates, check, load_policy, load_result
    from restorekit.eval.report import eval_html
    from restorekit.core.files import atomic_write_text, check_writable_path
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.runtime import load_bundle

    for path in (json_path, html_path):
        if path is not None:
            check_writable_path(path)
    b = load_bundle(bundle_dir, provider=provider)
    m = b.manifest
    names = [f"{m.target}-{m.precision}", f"{m.name}/{m.target}-{m.precision}"]
    gates = load_policy(policy, names) if policy else Gates()
    gates = gates.merged(Gates(min_psnr=min_psnr, min_ssim=min_ssim, max_nonfinite=max_nonfinite,
                               max_delta_e=max_delta_e, max_clipped_new=max_clipped_new, max_drop=max_drop))
    old = load_result(baseline) if baseline else None
    loaded = load_model(reference or _default_reference(m))
    ref = TorchSession(loaded.module)
    crop = size or (b.session.fixed_size[0] if b.session.fixed_size else m.tiling.get("tile") or 256)
    info = {"path": str(bundle_dir), "name": m.name, "target": m.target, "precision": m.precision,
            "scale": m.scale, "task": m.task, "model_sha256": m.files[0]["sha256"] if m.files else None}
    with err_console.status(f"evaluating {m.name} {m.target}-{m.precision} on {images} ..."):
        result = evaluate(b.session, ref, images, bundle_info=info, size=crop, count=count, scale=m.scale,
                          quality=clean, runs=runs)
    failures = check(result.data, gates, old)
    result.data["gates"] = {"thresholds": gates.active(), "baseline": str(baseline) if baseline else None,
                            "passed": not failures, "failures": [str(f) for f in failures]}

    data, s, lat = result.data, result.data["summary"], result.data["latency"]
    failing = {f.image for f in failures}
    table = Table(title=f"{m.name} {m.target}-{m.precision} vs {ref.device}")
    for col in ("image", "PSNR dB", "SSIM", "max |diff|", "ΔE00", "non-finite", "new clipped"):
        table.add_column(col, justify="left" if col == "image" else "right")
    for r in data["per_image"]:
        style = "red" if r["image"] in failing else None
        table.add_row(r["image"], f"{r['psnr_db']:.2f}", f"{r['ssim']:.4f}", f"{r['max_abs_err']:.2e}",
                      "–" if r["delta_e00"] is None else f"{r['delta_e00']:.3f}", str(r["nonfinite"]),
                      str(r["clipped_new"]), style=style)
    table.add_row("[bold]mean / worst[/]", f"{s['psnr_db_mean']:.2f} / {s['psnr_db_min']:.2f}", f"{s['ssim_mean']:.4f}",
                  f"{s['max_abs_err']:.2e}", "–" if s["delta_e00_mean"] is None else f"{s['delta_e00_mean']:.3f}",
                  str(s["nonfinite"]), str(s["clipped_new"]))
    out_console.print(table)
    if data["quality"]:
        q = data["quality"]["mean"]
        out_console.print(f"quality vs clean originals (degraded, seed 0): bicubic {q['bicubic_psnr_db']:.2f} dB, "
                          f"reference {q['reference_psnr_db']:.2f} dB, bundle {q['bundle_psnr_db']:.2f} dB PSNR")
    out_console.print(f"latency p50/p95: bundle {lat['bundle_ms_p50']:.1f}/{lat['bundle_ms_p95']:.1f} ms "
                      f"({lat['bundle_device']}), reference {lat['reference_ms_p50']:.1f}/{lat['reference_ms_p95']:.1f} ms, "
                      f"same run, input {lat['input']}")
    if json_path:
        atomic_write_text(json_path, json.dumps(data, indent=2) + "\n")
        out_console.print(f"wrote {json_path}")
    if html_path:
        atomic_write_text(html_path, eval_html(data, result.panels, failures, gates.active()))
        out_console.print(f"wrote {html_path}")
    if failures:
        err_console.print(f"[bold red]{len(failures)} gate failure(s):[/]")
        for f in failures:
            err_console.print(f"  ✗ {f}", highlight=False)
        raise typer.Exit(1)
    if gates.active() or old is not None:
        out_console.print(f"[green]gates passed[/] ({', '.join(f'{k} {v:g}' for k, v in gates.active().items()) or 'baseline'})")


def _parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for part in text.split(","):
        h, _, w = part.strip().lower().partition("x")
        try:
            size = (int(h), int(w or h))
        except ValueError:
            raise RestorekitError(f"bad size {part!r}: use N or HxW, comma-separated (e.g. 256,512x384)") from None
        if min(size) < 16:
            raise RestorekitError(f"size {part!r} is too small (at least 16)")
        sizes.append(size)
    return sizes


@app.command()
@user_errors
def bench(
    bundles: Annotated[list[Path], typer.Argument(metavar="BUNDLE...", help="Bundle directories, or a folder of bundles (e.g. bundles/restorekit-x2).")],
    reference: Annotated[Optional[str], typer.Option("--reference", help="Reference checkpoint (default: the bundles' own when it is the built-in model).")] = None,
    no_reference: Annotated[bool, typer.Option("--no-reference", help="Do not measure the PyTorch reference.")] = False,
    sizes: Annotated[str, typer.Option("--sizes", help="Input sizes, N or HxW, comma-separated.")] = "256",
    runs: Annotated[int, typer.Option("--runs", min=1, help="Timed runs per backend and size.")] = 30,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed runs first.")] = 3,
    threads: Annotated[Optional[int], typer.Option("--threads", min=1, help="Threads for every runtime (default: all cores).")] = None,
    provider: Annotated[str, typer.Option("--provider", help="ONNX Runtime: cpu, cuda or tensorrt.")] = "cpu",
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the results as JSON.")] = None,
):
    """Latency p50/p95/p99, throughput, peak RSS and fraction of CPU peak, bundles and reference in one run."""
    import json

    from rich.progress import Progress

    from restorekit.eval.bench import bench as run_bench, expand_bundles
    from restorekit.core.files import atomic_write_text, check_writable_path

    if json_path is not None:
        check_writable_path(json_path)
    dirs = expand_bundles(bundles)
    size_list = _parse_sizes(sizes)
    ref = ref_macs = None
    if not no_reference:
        from restorekit.bundle.manifest import read_manifest

        first = read_manifest(dirs[0])
        ref = reference or _default_reference(first)
        ref_macs = None if reference else first.source.get("macs_per_megapixel")  # the bundles' own source
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("bench", total=None)
        data = run_bench(dirs, ref, size_list, runs=runs, warmup=warmup, threads=threads, provider=provider,
                         on_step=lambda i, n, what: progress.update(task, completed=i, total=n, description=what),
                         reference_macs=ref_macs)
    table = Table(title=f"restorekit bench: {data['settings']['threads']} threads, {runs} runs after {warmup} warm-up, "
                        f"each backend in its own process, one after the other")
    cols = ("backend", "size", "tiles", "p50 ms", "p95 ms", "p99 ms", "img/s", "MP/s", "peak RSS MB",
            "GFLOP/s", "% CPU peak", "vs reference")
    for col in cols:
        table.add_column(col, justify="left" if col == "backend" else "right")
    for r in data["results"]:
        if "error" in r:
            table.add_row(r["name"], r["size"], "", f"[red]{r['error']}[/]", *[""] * (len(cols) - 4))
            continue
        pct = "–" if r["fraction_of_peak"] is None else f"{100 * r['fraction_of_peak']:.1f} %"
        gf = "–" if r["gflops"] is None else f"{r['gflops']:.1f}"
        sp = "–" if r["speedup_vs_reference"] is None else f"{r['speedup_vs_reference']:.2f}x"
        table.add_row(r["name"], r["size"], str(r["tiles"]), f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}",
                      f"{r['p99_ms']:.1f}", f"{r['images_per_s']:.1f}", f"{r['megapixels_per_s']:.2f}",
                      f"{r['peak_rss_mb']:.0f}", gf, pct, sp)
    out_console.print(table)
    mach = data["machine"]
    out_console.print(
        f"% CPU peak = GFLOP/s (2 x the model's MACs at the input size / p50; int8 counted the same way, so it can pass "
        f"100 %) over this CPU's measured fp32 peak, {mach['peak_gflops']:.0f} GFLOP/s: {mach['peak_how']}. Direct-conv "
        f"kernels can run slightly above a GEMM. Theoretical: {mach['theoretical_peak_gflops']:.0f} GFLOP/s = "
        f"{mach['theoretical_peak_how']}" + (" — below the measured rate, so the clock shown is not the running clock"
                                             if mach["theoretical_peak_gflops"] < mach["peak_gflops"] else ""),
        highlight=False)
    for s in data["skipped"]:
        out_console.print(f"skipped {s['name']}: {s['reason']}")
    if json_path:
        atomic_write_text(json_path, json.dumps(data, indent=2) + "\n")
        out_console.print(f"wrote {json_path}")
    if any("error" in r for r in data["results"]):
        raise RestorekitError("some measurements failed: " + "; ".join(f"{r['name']} {r['size']}: {r['error']}"
                                                                        for r in data["results"] if "error" in r))


@app.command("trt-build")
@user_errors
def trt_build(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An ONNX bundle directory.")],
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Engine cache directory (default: under $RESTOREKIT_CACHE or ~/.cache/restorekit/tensorrt).")] = None,
):
    """Build and cache TensorRT engines for an ONNX bundle (Jetson, NVIDIA GPUs)."""
    import importlib.util

    import numpy as np

    from restorekit.bundle.manifest import read_manifest
    from restorekit.core.errors import BackendUnavailableError
    from restorekit.runtime.tensorrt import TENSORRT_INSTALL_HINT, build_engine, engine_plan, trt_cache_dir

    manifest = read_manifest(bundle_dir)
    plan = engine_plan(manifest)
    cache_dir = cache or trt_cache_dir(manifest)
    try:
        import onnxruntime as ort

        ort_trt = "TensorrtExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_trt = False
    has_trt = importlib.util.find_spec("tensorrt") is not None
    if not ort_trt and not has_trt:
        raise BackendUnavailableError("TensorRT is not available here: onnxruntime has no TensorrtExecutionProvider "
                                      f"(install JetPack's onnxruntime-gpu) and {TENSORRT_INSTALL_HINT}")
    out_console.print(f"profile {plan.input_name}: min {plan.shape(plan.min_hw)}, opt {plan.shape(plan.opt_hw)}, "
                      f"max {plan.shape(plan.max_hw)}; fp16 {plan.fp16}, int8 {plan.int8}; cache {cache_dir}")
    if ort_trt:
        from restorekit.runtime.onnx import OnnxSession
        from restorekit.runtime.tensorrt import tensorrt_options

        with err_console.status("building ONNX Runtime's TensorRT engine (minutes on a Jetson) ..."):
            session = OnnxSession(bundle_dir / manifest.model_file, manifest.input, manifest.output,
                                  provider="tensorrt", trt_options=tensorrt_options(manifest, cache_dir))
            session.run(np.zeros(plan.shape(plan.opt_hw), np.float32))
        out_console.print(f"warmed ONNX Runtime's engine cache in {cache_dir} ({session.device}); "
                          f"`restorekit run {bundle_dir} ... --provider tensorrt` reuses it")
    if has_trt:
        with err_console.status("building a standalone TensorRT engine ..."):
            engine = build_engine(Path(bundle_dir), manifest, cache_dir)
        out_console.print(f"wrote {engine} (for trtexec / DeepStream / your own TensorRT runtime)")
    else:
        out_console.print(f"no standalone engine: {TENSORRT_INSTALL_HINT}")


def _default_reference(manifest) -> str:
    """The checkpoint a bundle was made from: the built-in model, or the recorded path when the
    file there still has the recorded sha256."""
    from restorekit.core.files import sha256_file
    from restorekit.models import builtin

    sha = manifest.source.get("checkpoint_sha256")
    if sha and sha == sha256_file(builtin.BUILTIN_WEIGHTS):
        return "default"
    recorded = manifest.source.get("checkpoint")
    if recorded and Path(recorded).is_file() and sha256_file(recorded) == sha:
        return recorded
    where = f" (recorded: {recorded}, {'changed since' if recorded and Path(recorded).is_file() else 'not found here'})" if recorded else ""
    raise RestorekitError(f"cannot find the checkpoint this bundle was made from{where}: give it with --reference")


@app.command()
@user_errors
def assess(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Photos to assess.")],
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the measurements as JSON.")] = None,
):
    """Damage assessment: B&W / sepia / colour, fading, colour cast, noise, blur, JPEG blockiness."""
    import json

    from restorekit.core.files import atomic_write_text, check_writable_path
    from restorekit.restore.assess import assess as measure
    from restorekit.core.image import read_image

    if json_path is not None:
        check_writable_path(json_path)
    rows = []
    for path in images:
        photo = read_image(path)
        rows.append({"image": str(path), "size": list(photo.size), "alpha": photo.alpha is not None,
                     "bit_depth": photo.bit_depth, **measure(photo.rgb).to_dict()})
    table = Table(title="damage assessment")
    cols = [("image", "image"), ("tone", "tone"), ("tonal range L*", "tonal_range"), ("contrast", "contrast"),
            ("cast", "cast"), ("noise σ", "noise_sigma"), ("blur (Lap. var)", "blur"), ("blockiness", "blockiness")]
    for title, _ in cols:
        table.add_column(title, justify="left" if title in ("image", "tone") else "right")
    for r in rows:
        table.add_row(*(Path(r[k]).name if k == "image" else (f"{r[k]:.1f}" if isinstance(r[k], float) else str(r[k]))
                        for _, k in cols))
    out_console.print(table)
    out_console.print("tone: bw = no chroma, sepia = weak chroma of one warm hue; tonal range: L* between the 1st and "
                      "99th percentiles (faded < 75); cast: mean a*b* of the mid-tones; noise σ in 8-bit levels; "
                      "blockiness 1 = no JPEG grid", highlight=False)
    if json_path:
        atomic_write_text(json_path, json.dumps({"schema_version": 1, "kind": "restorekit.assess", "images": rows},
                                                indent=2) + "\n")
        out_console.print(f"wrote {json_path}")


@app.command()
@user_errors
def degrade(
    image: Annotated[Path, typer.Argument(help="A clean photo.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the degraded image (.png/.jpg/.tif).")],
    seed: Annotated[int, typer.Option("--seed", help="Random seed (same seed, same output).")] = 0,
    mode: Annotated[str, typer.Option("--mode", help="damaged: aged look + scratches, dust, stains, tears; aged: the aged look only; print: colour-print ageing (cyan dye loss, silver mirroring, halftone; each at its training probability); pair: the training input of a --scale model (smaller); second-order: Real-ESRGAN-style two-round degradation at --scale.")] = "damaged",
    scale: Annotated[int, typer.Option("--scale", min=1, help="For --mode pair / second-order: the model's upscale factor.")] = 2,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="For --mode damaged: also write the defect mask (scratches, hairs, dust, tears) as a PNG.")] = None,
):
    """Preview what training sees: synthetic degradation of a photo, deterministic with --seed."""
    import numpy as np

    from restorekit.degrade.damage import damage_photo
    from restorekit.degrade.synthetic import age_photo, degrade_pair
    from restorekit.core.image import check_output_path, read_image, write_image

    modes = ("damaged", "aged", "print", "pair", "second-order")
    if mode not in modes:
        raise RestorekitError(f"unknown --mode {mode!r}: choose {', '.join(modes)}")
    if mask is not None and mode != "damaged":
        raise RestorekitError("--mask needs --mode damaged")
    check_output_path(output)
    if mask is not None:
        check_output_path(mask)
    photo = read_image(image)
    rgb = photo.rgb
    rng = np.random.default_rng(seed)
    if mode in ("pair", "second-order"):
        from restorekit.degrade.second_order import second_order_pair

        h, w = (rgb.shape[0] // scale) * scale, (rgb.shape[1] // scale) * scale
        result = degrade_pair(rgb[:h, :w], scale, rng) if mode == "pair" else second_order_pair(rgb[:h, :w], rng, scale)[0]
    elif mode == "print":
        from restorekit.degrade.aging import apply_aging

        result = apply_aging(rgb, rng)
    else:
        result = age_photo(rgb, rng)
        if mode == "damaged":
            damaged = damage_photo(result, rng)
            result = damaged.image
            if mask is not None:
                write_image(mask, np.repeat(damaged.defects[:, :, None], 3, axis=2).astype(np.float32), gray=True)
    write_image(output, result, photo.alpha if mode not in ("pair", "second-order") else None, gray=photo.was_gray)
    out_console.print(f"wrote {output} ({result.shape[1]}x{result.shape[0]}, {mode}, seed {seed})"
                      + (f" and {mask}" if mask is not None else ""))


@app.command()
@user_errors
def train(
    data: Annotated[list[Path], typer.Option("--data", help="Folder(s) of clean photos (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Output weights (.safetensors).")],
    student: Annotated[str, typer.Option("--student", help="edgenet: 2x restoration (the built-in model's architecture); scratch-unet: scratch/dust/tear detector supervised by synthetic damage masks.")] = "edgenet",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 2000,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Default 16 (edgenet), 8 (scratch-unet).")] = None,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", min=16, help="Training patch side (HR for edgenet). Default 96 (edgenet), 128 (scratch-unet).")] = None,
    channels: Annotated[int, typer.Option("--channels", min=4, help="edgenet width.")] = 48,
    num_convs: Annotated[int, typer.Option("--num-convs", min=1, help="edgenet depth.")] = 6,
    width: Annotated[int, typer.Option("--width", min=4, help="scratch-unet width at full resolution.")] = 16,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="File names to hold out (repeatable).")] = None,
):
    """Train a student on synthetic degradations of clean photos (resumable, deterministic)."""
    if student not in ("edgenet", "scratch-unet"):
        raise RestorekitError(f"unknown student {student!r}: available: edgenet, scratch-unet")
    if out.suffix != ".safetensors":
        raise RestorekitError(f"--out must end in .safetensors: {out}")
    if not out.parent.exists():
        raise RestorekitError(f"output directory does not exist: {out.parent}")
    from restorekit.training.train import train_scratch_detector, train_supervised

    if student == "edgenet":
        path = train_supervised(data, out, steps=steps, seed=seed, batch_size=batch_size or 16,
                                patch_size=patch_size or 96, model_kwargs={"channels": channels, "num_convs": num_convs},
                                exclude=set(exclude or ()))
    else:
        path = train_scratch_detector(data, out, steps=steps, seed=seed, batch_size=batch_size or 8,
                                      patch_size=patch_size or 128, width=width, exclude=set(exclude or ()))
    out_console.print(f"wrote {path}")


@app.command()
@user_errors
def inspect(
    model: ModelArg = None,
    size: Annotated[Optional[str], typer.Option("--size", help="Input size HxW for the MACs count and the trace (default: 64x64, or the model's fixed size).")] = None,
):
    """Describe a model: architecture, task, scale, params, MACs, and what each target makes of it."""
    from restorekit.convert.compat import compatibility
    from restorekit.models.loader import load_model

    hw = _parse_sizes(size)[0] if size else None
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


def main() -> None:
    """Console-script entry point."""
    import warnings

    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
