"""``restorekit restore | assess | degrade``: the old-photo pipeline, its damage assessment, and a
preview of the synthetic damage training sees."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from restorekit.cli.common import (AllowUnvalidatedOpt, KeepProfileOpt, OverwriteOpt, ProviderOpt, ThreadsOpt,
                                   err_console, out_console, split_list)


def _stage_fidelity(v: dict) -> str:
    """One cell: how an edge stage compares with its reference (PSNR, mask IoU, or the faces found)."""
    if "faces_reference" in v:
        iou = "–" if v["mean_box_iou"] is None else f"{v['mean_box_iou']:.3f}"
        lm = "" if v["max_landmark_err_px"] is None else f", landmarks ≤ {v['max_landmark_err_px']:.2f} px"
        return f"faces {v['matched']}/{v['faces_reference']} matched ({v['faces_bundle']} found), box IoU {iou}{lm}"
    return f"{v['psnr_db']:.2f} dB" + (f", mask IoU {v['mask_iou']:.4f}" if "mask_iou" in v else "")


def _print_restored(logs: list[dict], reference: bool) -> None:
    """One line per restored photo; with ``reference``, the table of edge stages vs their references."""
    for entry in logs:
        ran = [s["stage"] for s in entry["stages"] if s["ran"]]
        faces = next((s["found"] for s in entry["stages"] if s["stage"] == "faces" and s["ran"]), None)
        out_console.print(f"wrote {entry['output']} ({entry['output_size'][1]}x{entry['output_size'][0]}; "
                          f"{', '.join(ran)}" + (f"; faces found {faces['count']}, enhanced {faces['enhanced']}"
                                                 if faces else "")
                          + (f"; colours converted from {entry['metadata']['converted_from']} to sRGB"
                             if entry["metadata"]["converted_from"] else "") + ")")
    if reference and logs:
        table = Table(title="edge stages vs their full-precision references (same stage input)")
        for col in ("photo", "stage", "edge", "reference", "fidelity", "edge s", "reference s"):
            table.add_column(col, justify="right" if col.endswith(" s") else "left")
        for entry in logs:
            for st, v in ((st, v) for st in entry["stages"] for v in (st.get("vs_reference"), st.get("inpaint_vs_reference"))):
                if v:
                    stage = st["stage"] + (" (inpaint, inside the mask)" if v.get("where") else "")
                    table.add_row(Path(entry["input"]).name, stage, st["backend"], v["backend"], _stage_fidelity(v),
                                  f"{v['edge_seconds']:.2f}", f"{v['reference_seconds']:.2f}")
        out_console.print(table)


def _print_profile(logs: list[dict]) -> None:
    """Per photo, each stage's wall time split into the models' time and the rest (``--profile``)."""
    for entry in logs:
        table = Table(title=f"{Path(entry['input']).name}: where the time goes")
        for col in ("stage", "wall s", "model s", "other s"):
            table.add_column(col, justify="left" if col == "stage" else "right")
        ran = [st for st in entry["stages"] if st["ran"]]
        for st in ran:
            table.add_row(st["stage"], f"{st['seconds']:.2f}", f"{st['model_seconds']:.2f}",
                          f"{st['seconds'] - st['model_seconds']:.2f}")
        wall, model = sum(st["seconds"] for st in ran), sum(st["model_seconds"] for st in ran)
        table.add_row("all stages", f"{wall:.2f}", f"{model:.2f}", f"{wall - model:.2f}")
        out_console.print(table)


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
    scale: Annotated[int, typer.Option("--scale", min=1, max=16, help="Output size: 1 = as the input, 2 = twice (the built-in model), up to the --sr model's scale.")] = 1,
    colorize: Annotated[Optional[str], typer.Option("--colorize", help="Colorizer bundle (or checkpoint): DDColor. Colorizes photos assessed black-and-white or sepia (colour photos are left as they are, with the reason in the log).")] = None,
    inpainter: Annotated[Optional[str], typer.Option("--inpainter", help="Inpainting bundle (or checkpoint): LaMa. Fills the scratch mask instead of OpenCV Telea; only masked pixels change.")] = None,
    compare: Annotated[Optional[Path], typer.Option("--compare", help="Also write original | result side by side (single photo).")] = None,
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the log of every stage as JSON.")] = None,
    reference: Annotated[bool, typer.Option("--reference", help="Also run the restoration, scratch-detection, inpainting, face-detection, sr and colorize stages with their full-precision PyTorch references; report each stage's fidelity and latency.")] = False,
    bundles: Annotated[Optional[Path], typer.Option("--bundles", help="A folder of bundles (the output of `restorekit bundle --out DIR`): each stage not given explicitly takes its bundle from it by task, for --target; what an edge box with only restorekit\\[runtime] runs.")] = None,
    target: Annotated[str, typer.Option("--target", help="With --bundles: the target whose bundles to run (onnx, tflite, coreml).")] = "onnx",
    provider: ProviderOpt = "cpu",
    threads: ThreadsOpt = None,
    allow_unvalidated: AllowUnvalidatedOpt = False,
    overwrite: OverwriteOpt = False,
    keep_profile: KeepProfileOpt = False,
    profile: Annotated[bool, typer.Option("--profile", help="Print, per photo, each stage's wall time split into model time and the rest (also in --json: seconds, model_seconds).")] = False,
):
    """Restore old photos: damage assessment, scratch removal, restoration, faces, tone and colour cast."""

    from rich.markup import escape
    from rich.progress import Progress

    from restorekit.core.files import atomic_write_text, check_writable_path, json_text
    from restorekit.restore.folder import plan_jobs, restore_batch
    from restorekit.restore.models import load_pipeline_models
    from restorekit.restore.pipeline import RestoreOptions

    opts = RestoreOptions(stages=tuple(split_list(stages, "--stages") or ()), scale=scale, colorize=colorize is not None,
                          face_strength=strength)
    jobs = plan_jobs(input, output, compare, overwrite, keep_profile)
    if json_path is not None:
        check_writable_path(json_path)
    models = load_pipeline_models(opts, restorer=bundle, detector=detector, face_detector=face_detector,
                                  face_restorer=face_model, upscaler=sr, reference=reference, provider=provider,
                                  threads=threads, colorizer=colorize, inpainter=inpainter,
                                  bundles=None if bundles is None else str(bundles), target=target,
                                  allow_failed=allow_unvalidated)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task("restore", total=len(jobs.pairs))

        def done(src: Path, entry: dict | None) -> None:
            for st in (entry or {}).get("stages", ()):
                if st["stage"] == "colorize" and colorize and not st["ran"]:
                    err_console.print(f"{src.name}: colorize skipped: {st['reason']}")
            for note in (entry or {}).get("metadata", {}).get("notes", ()):
                err_console.print(f"{src.name}: note: {note}", highlight=False)
            progress.advance(task)

        batch = restore_batch(jobs, models, opts, compare,
                              on_photo=lambda src: progress.update(task, description=escape(src.name)),
                              on_stage=lambda src, st: progress.update(task, description=escape(f"{src.name}: {st}")),
                              on_done=done)
    _print_restored(batch.logs, reference)
    if profile:
        _print_profile(batch.logs)
    if json_path:
        atomic_write_text(json_path, json_text(batch.to_json(models), indent=2))
    if batch.skipped:
        out_console.print(f"skipped {len(batch.skipped)} already restored: {', '.join(batch.skipped)}")
    if batch.failures:
        err_console.print(Text(f"{len(batch.failures)} of {len(jobs.pairs)} photos failed:", style="bold red"))
        for name, err in batch.failures:
            err_console.print(f"  ✗ {name}: {err}", highlight=False)
        raise typer.Exit(2)


def assess(
    images: Annotated[list[Path], typer.Argument(metavar="IMAGE...", help="Photos to assess.")],
    json_path: Annotated[Optional[Path], typer.Option("--json", help="Write the measurements as JSON.")] = None,
):
    """Damage assessment: B&W / sepia / colour, fading, colour cast, noise, blur, JPEG blockiness."""

    from restorekit.core.files import atomic_write_text, check_writable_path, json_text
    from restorekit.restore.assess import assess_file

    if json_path is not None:
        check_writable_path(json_path)
    rows = [assess_file(path) for path in images]
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
        atomic_write_text(json_path, json_text({"schema_version": 1, "kind": "restorekit.assess", "images": rows},
                                               indent=2))
        out_console.print(f"wrote {json_path}")


def degrade(
    image: Annotated[Path, typer.Argument(help="A clean photo.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Where to write the degraded image (.png/.jpg/.tif).")],
    seed: Annotated[int, typer.Option("--seed", min=0, max=2**32 - 1, help="Random seed (same seed, same output).")] = 0,
    mode: Annotated[str, typer.Option("--mode", help="damaged: aged look + scratches, dust, stains, tears; aged: the aged look only; print: colour-print ageing (cyan dye loss, silver mirroring, halftone; each at its training probability); pair: the training input of a --scale model (smaller); second-order: Real-ESRGAN-style two-round degradation at --scale.")] = "damaged",
    scale: Annotated[int, typer.Option("--scale", min=1, max=8, help="For --mode pair / second-order: the model's upscale factor.")] = 2,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="For --mode damaged: also write the defect mask (scratches, hairs, dust, tears) as a PNG.")] = None,
):
    """Preview what training sees: synthetic degradation of a photo, deterministic with --seed."""
    import numpy as np

    from restorekit.core.image import check_output_path, read_image, write_image
    from restorekit.core.errors import BadInputError
    from restorekit.degrade.preview import MIN_DEGRADE_SIDE, SCALED_MODES, check_mode, degrade_preview

    check_mode(mode, mask is not None)
    check_output_path(output, image)
    if mask is not None:
        check_output_path(mask)
    photo = read_image(image)
    side = MIN_DEGRADE_SIDE * (scale if mode in SCALED_MODES else 1)
    if min(photo.size) < side:
        raise BadInputError(f"{image} is {photo.size[1]}x{photo.size[0]}: --mode {mode}"
                            + (f" at --scale {scale}" if mode in SCALED_MODES else "") + f" needs at least {side}x{side}")
    result, defects = degrade_preview(photo.rgb, mode, np.random.default_rng(seed), scale)
    if mask is not None:
        write_image(mask, np.repeat(defects[:, :, None], 3, axis=2).astype(np.float32), gray=True)
    write_image(output, result, photo.alpha if mode not in SCALED_MODES else None, gray=photo.was_gray)
    out_console.print(f"wrote {output} ({result.shape[1]}x{result.shape[0]}, {mode}, seed {seed})"
                      + (f" and {mask}" if mask is not None else ""))
