"""The main job: model -> (quantize + convert) per target/precision -> validated bundles + report."""

from __future__ import annotations

import platform
import os
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from restorekit.bundle.manifest import BUILD_TMP_PREFIX, REPLACED_PREFIX, Manifest, write_manifest
from restorekit.build.convert import convert_model
from restorekit.core.errors import BadInputError
from restorekit.core.files import process_alive
from restorekit.core.metrics import psnr_from_mse
from restorekit.core.targets import CALIBRATED, MIN_FIDELITY_DB, PRECISIONS, TARGETS, check_target, targets_for
from restorekit.quantize.recipe import INT8_FINETUNE, INT8_SPLIT_PRELUS
from restorekit.runtime.task_io import example_input, viewable

#: Keys every manifest's metrics carry (None when not measured, e.g. Core ML off macOS).
#: Detector bundles: raw outputs within this of the reference at fp32; at every precision the
#: decoded faces must match the reference's one to one, boxes overlapping at least MIN_DETECT_IOU.
MAX_DETECT_ERR_FP32, MIN_DETECT_IOU = 1e-3, 0.9
#: Fixed input side of detector bundles whose target needs static shapes (TFLite); photos are
#: fitted inside it and padded.
DETECT_SIZE = 640
METRIC_KEYS = ("fidelity_psnr_db", "fidelity_ssim", "max_abs_err", "nonfinite", "latency_ms_p50", "latency_ms_p95",
               "reference_latency_ms_p50", "device", "validated", "not_validated_reason", "sanity_passed",
               "simulated_fp16_psnr_db")


@dataclass
class BundleResult:
    """One built bundle and whether it met its fidelity bar."""

    target: str
    precision: str
    path: Path
    manifest: Manifest
    passed: bool
    detail: str
    seconds: float
    crops: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class BuildPlan:
    """What to build, validated before any work starts."""

    pairs: list[tuple[str, str]]
    skipped: list[str]


def plan(targets: list[str], precisions: list[str] | None) -> BuildPlan:
    """Expand targets x precisions; an unsupported pair is skipped (with a note) unless it is the only one."""
    pairs, skipped = [], []
    for t in targets:
        if t not in TARGETS:
            raise BadInputError(f"unknown target {t!r}: choose from {', '.join(TARGETS)}")
        for p in precisions or TARGETS[t].default_precisions:
            if p not in PRECISIONS:
                raise BadInputError(f"unknown precision {p!r}: choose from {', '.join(PRECISIONS)}")
            if p in TARGETS[t].precisions:
                pairs.append((t, p))
            else:
                skipped.append(f"{t}-{p}: {t} does not implement {p} (it takes {', '.join(TARGETS[t].precisions)})")
    if not pairs:
        check_target(targets[0], (precisions or ["fp32"])[0])  # raises the precise reason
    return BuildPlan(pairs, skipped)


def _for_task(build: BuildPlan, task: str) -> BuildPlan:
    """Drop (with a note) the targets that do not take models of ``task``."""
    keep = [(t, p) for t, p in build.pairs if TARGETS[t].converts(task)]
    dropped = sorted({t for t, _ in build.pairs} - {t for t, _ in keep})
    notes = build.skipped + [f"{t}: does not take {task} models in this version" for t in dropped]
    if not keep:
        raise BadInputError(f"no requested target takes {task} models: use "
                            f"{', '.join(targets_for(task))}")
    return BuildPlan(keep, notes)


TMP_PREFIX = BUILD_TMP_PREFIX


def remove_abandoned_builds(model_dir: Path) -> list[str]:
    """Remove the temporary bundle directories under ``model_dir`` whose builder process is gone (a
    build killed midway); those of a build still running are left alone. Returns their names."""
    removed = []
    for d in model_dir.glob(f"{TMP_PREFIX}*"):
        pid = d.name[len(TMP_PREFIX):].split("-", 1)[0]
        alive = pid.isdigit() and process_alive(int(pid))
        if d.is_dir() and not alive:
            shutil.rmtree(d, ignore_errors=True)
            removed.append(d.name)
    for d in model_dir.glob(f"{REPLACED_PREFIX}*"):  # a bundle moved aside by a replacement that was killed midway
        shutil.rmtree(d, ignore_errors=True)
    return removed


def _replace_dir(tmp: Path, final: Path) -> None:
    """Move a finished bundle into place; an older bundle at ``final`` is replaced whole."""
    from restorekit.core.files import current_umask

    os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp makes 0700: a bundle is meant to be copied and shared
    old = None
    if final.exists():
        old = final.with_name(f"{REPLACED_PREFIX}{final.name}-{time.time_ns()}")
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _passed_before(bundle_dir: Path) -> bool:
    """Whether a readable bundle that passed its gates is already at ``bundle_dir``."""
    from restorekit.bundle.manifest import read_manifest
    from restorekit.core.errors import RestorekitError

    if not (bundle_dir / "manifest.json").is_file():
        return False
    try:
        return read_manifest(bundle_dir).metrics.get("gates_passed") is True
    except RestorekitError:
        return False


def build_bundles(
    model_ref: str | None,
    out_dir: Path,
    targets: list[str] | None = None,
    precisions: list[str] | None = None,
    calib_dir: Path | None = None,
    eval_dir: Path | None = None,
    tile: int = 256,
    overlap: int = 32,
    eval_count: int = 6,
    calib_count: int = 16,
    latency_runs: int = 8,
    console=None,
    int8_finetune: dict | None = INT8_FINETUNE,
    int8_split_prelus: bool = INT8_SPLIT_PRELUS,
    recipe=None,
) -> list[BundleResult]:
    """Build and validate bundles under ``out_dir/<model-name>/<target>-<precision>/``.

    ONNX and TFLite bundles are validated numerically against the PyTorch fp32 reference on
    real photo crops; Core ML bundles structurally (and by prediction on macOS). Writes
    ``report.json`` and ``report.html`` beside the bundles. ``recipe`` (a
    :class:`~restorekit.quantize.recipe.Recipe`) replaces the built-in recipe of its scheme.
    ``int8_finetune`` (recipe ``finetune`` settings, None = off) is the ``int8`` precision's
    quantization-aware fine-tuning; by default it runs only where plain w8a8 simulates below 45 dB.
    ``int8_split_prelus`` (a recipe's ``split_prelus`` instead, when given) splits every other
    PReLU into a ReLU on doubled channels for the ``int8`` precision of targets that run it fast.
    """
    from rich.console import Console

    from restorekit.eval.report import write_reports
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.quantize.calibration import calibration_tiles

    console = console or Console(stderr=True)
    calib_dir, eval_dir, out_dir = _check_dirs(calib_dir, eval_dir, out_dir)
    build = plan(targets or list(TARGETS), precisions)
    needs_calib = any(p in CALIBRATED for _, p in build.pairs) or bool(recipe and recipe.integer)
    if needs_calib:  # fail on a bad calibration folder before the (slow) model load
        calibration_tiles(calib_dir, tile=16, count=1)
    loaded = load_model(model_ref)
    spec = loaded.spec
    build = _for_task(build, spec.task)
    size = spec.fixed_size or (DETECT_SIZE if spec.task == "detect" else tile)
    if recipe is not None:
        from restorekit.quantize.recipe import quantizable_layers

        for t, _ in build.pairs:  # unknown layer names and target mismatches fail before any work
            recipe.check(t, quantizable_layers(loaded.module))
        calib_count = recipe.calibration.get("tiles", calib_count)
    calib = calibration_tiles(calib_dir, tile=size, count=calib_count) if needs_calib else None
    if calib is None and any(p == "fp16" for _, p in build.pairs):  # a few tiles for fp16's overflow check
        from restorekit.quantize.fp16 import FP16_CHECK_TILES

        calib = calibration_tiles(calib_dir, tile=size, count=FP16_CHECK_TILES)
    if calib is not None:  # as the model takes them: gray for a colorizer, with a hole mask for an inpainter
        calib = [example_input(spec.task, c, seed=i) for i, c in enumerate(calib)]
    split = recipe.split_prelus if recipe is not None else int8_split_prelus
    prepared = None
    if needs_calib and (recipe is None or not recipe.op_names):  # int8 preparations shared by the int8 targets
        finetune = recipe.finetune if recipe is not None else int8_finetune
        alpha = recipe.equalization_alpha if recipe is not None else None
        int8_targets = sorted({t for t, p in build.pairs if p in CALIBRATED})
        prepared = _prepare_int8(loaded.module, spec.name, int8_targets, calib, finetune, alpha, split, console)
    reference = TorchSession(loaded.module)
    eval_count, latency_runs = validation_budget(spec, size, eval_count, latency_runs, console)
    validation = _Validation(reference, loaded, latency_runs)
    validation.load_inputs(eval_dir, spec.task, size, eval_count)
    for note in build.skipped:
        console.print(f"[yellow]skipped[/] {note}")
    options = dict(size=size, overlap=overlap, calib=calib, prepared=prepared, recipe=recipe, split=split)
    results = _write_bundles(out_dir / spec.name, loaded, build.pairs, options, validation, console)
    write_reports(out_dir / spec.name, spec, results, validation.tiles)
    return results


#: Multiply-accumulates of one forward pass on a validation tile above which validation is cut to
#: HEAVY_EVAL_COUNT crops and HEAVY_LATENCY_RUNS timed runs (after as many warm-up runs) per side:
#: Real-ESRGAN x4plus (RRDBNet, 16.7 M params) costs ~1.2 TMAC on a 256 px tile, 15-30 s per pass
#: on 2 cores; the default 6 crops + 2 x (2 + 8) passes per bundle took over 15 minutes, 2 crops
#: + 2 x (2 + 2) passes 8 minutes (2026-12-04, busy cores).
HEAVY_TILE_MACS = 100e9
HEAVY_EVAL_COUNT, HEAVY_LATENCY_RUNS = 1, 1


def validation_budget(spec, size: int, eval_count: int, latency_runs: int, console=None) -> tuple[int, int]:
    """(eval crops, timed runs) for validating ``spec``'s bundles at ``size``: the requested ones,
    cut for a model whose single pass is heavy (``HEAVY_TILE_MACS``), with a note."""
    tile_macs = spec.macs_per_megapixel * size * size / 1e6
    if tile_macs <= HEAVY_TILE_MACS:
        return eval_count, latency_runs
    count, runs = min(eval_count, HEAVY_EVAL_COUNT), min(latency_runs, HEAVY_LATENCY_RUNS)
    if console is not None:
        console.print(f"{spec.name}: {tile_macs / 1e9:.0f} GMAC per {size}x{size} pass: validating on {count} crops, "
                      f"{runs} timed runs per side")
    return count, runs


def _check_dirs(calib_dir, eval_dir, out_dir) -> tuple[Path, Path, Path]:
    """The calibration and eval folders (default: the repository's sample_images/) and a usable ``out_dir``."""
    sample_dir = Path(__file__).resolve().parents[2] / "sample_images"
    if (calib_dir is None or eval_dir is None) and not sample_dir.is_dir():
        raise BadInputError("give --calib and --eval-images: the default sample_images/ is only present in a "
                            "clone of the repository (pip install -e .)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise BadInputError(f"--out is a file, not a directory: {out_dir}")
    if not out_dir.parent.exists():
        raise BadInputError(f"parent directory of --out does not exist: {out_dir.parent}")
    return Path(calib_dir or sample_dir), Path(eval_dir or sample_dir), out_dir


def _prepare_int8(module, name: str, int8_targets: list[str], calib, finetune: dict | None, alpha, split: bool,
                  console) -> dict:
    """The int8 float preparations shared by ``int8_targets``, with a progress bar when fine-tuning."""
    from restorekit.build.convert import prepare_for_targets

    if finetune is None:
        return prepare_for_targets(module, int8_targets, calib, alpha=alpha, split_prelus=split)
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TextColumn("fake-quant PSNR {task.fields[psnr]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                  console=console, transient=False) as bar:
        jobs = {}

        def step(target, i, loss):
            if target not in jobs:
                jobs[target] = bar.add_task(escape(f"int8 fine-tuning {name} for {target}"),
                                            total=finetune.get("steps", 300), psnr="…")
            bar.update(jobs[target], completed=i, psnr=f"{psnr_from_mse(loss):.2f} dB")

        prepared = prepare_for_targets(module, int8_targets, calib, finetune=finetune, progress=step,
                                       alpha=alpha, split_prelus=split)
    for _, info in prepared.values():
        if "simulated_ptq_psnr_db" in info:
            done = info.get("finetune")
            console.print(f"int8: plain w8a8 simulates {info['simulated_ptq_psnr_db']:.2f} dB on the calibration tiles; "
                          + (f"fine-tuned {done['steps']} steps" if isinstance(done, dict) else "no fine-tuning needed"))
    return prepared


@dataclass
class _Validation:
    """What every bundle of one build is validated against: the reference and the eval inputs."""

    reference: object
    loaded: object
    latency_runs: int
    tiles: list = field(default_factory=list)
    refs: list = field(default_factory=list)

    def load_inputs(self, eval_dir: Path, task: str, size: int, count: int) -> None:
        """Eval crops and their reference outputs; detectors see whole photos (faces are not cut by a crop)."""
        from restorekit.eval.fidelity import eval_photos, eval_tiles

        if task == "detect":
            self.tiles = eval_photos(eval_dir, max_side=size, count=count)
        else:
            self.tiles = eval_tiles(eval_dir, size=size, count=count, task=task)
            self.refs = [self.reference.run(t.x) for t in self.tiles]


def _manifest_for(spec, target: str, precision: str, conv, size: int, overlap: int) -> Manifest:
    """The manifest of a freshly converted model (files and metrics are filled in later). The overlap
    is at most half the tile: tiles overlapping by their whole side would never advance."""
    tiling = ({"tile": size, "overlap": min(overlap, size // 2), "multiple_of": spec.multiple_of} if spec.task != "detect"
              else {"tile": None if conv.input.shape[2] is None else size, "overlap": 0, "multiple_of": 1})
    return Manifest(
        name=spec.name, task=spec.task, scale=spec.scale, target=target, precision=precision,
        input=conv.input, output=conv.output, tiling=tiling,
        source={"checkpoint": spec.checkpoint, "checkpoint_sha256": spec.checkpoint_sha256,
                "architecture": spec.architecture,
                "params": spec.params, "macs_per_megapixel": round(spec.macs_per_megapixel)},
        recipe=conv.recipe,
    )


def _write_bundles(model_dir: Path, loaded, pairs, options: dict, validation: _Validation, console) -> list[BundleResult]:
    """Convert, validate and move into place one bundle per (target, precision), with a progress bar.

    Each bundle is built in a temporary directory beside its final place and replaces an older
    bundle whole; a failure leaves no half-written bundle and no empty directories behind."""
    from rich.markup import escape
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    spec = loaded.spec
    created = [d for d in (model_dir.parent, model_dir) if not d.exists()]
    model_dir.mkdir(parents=True, exist_ok=True)
    remove_abandoned_builds(model_dir)
    results: list[BundleResult] = []
    progress = Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                        TimeElapsedColumn(), console=console, transient=False)
    with progress:
        job = progress.add_task(escape(f"bundling {spec.name}"), total=len(pairs))
        for target, precision in pairs:
            progress.update(job, description=f"{target}-{precision}: converting")
            t0 = time.perf_counter()
            tmp = Path(tempfile.mkdtemp(prefix=f"{TMP_PREFIX}{os.getpid()}-{target}-{precision}-", dir=model_dir))
            try:
                conv = convert_model(loaded.module, spec, target, tmp, precision, tile=options["size"],
                                     calib=options["calib"], prepared=options["prepared"], recipe=options["recipe"],
                                     split_prelus=options["split"])
                manifest = _manifest_for(spec, target, precision, conv, options["size"], options["overlap"])
                write_manifest(tmp, manifest)  # checksums first: validation reads the bundle as a user would
                progress.update(job, description=f"{target}-{precision}: validating")
                passed, detail, crops = _validate(tmp, manifest, validation.tiles, validation.refs,
                                                  validation.reference, loaded, validation.latency_runs, conv)
                manifest.metrics["gates_passed"] = bool(passed)
                write_manifest(tmp, manifest)
                final = model_dir / f"{target}-{precision}"
                if passed or not _passed_before(final):
                    _replace_dir(tmp, final)
                else:  # a failed rebuild never replaces a bundle that passed
                    shutil.rmtree(tmp, ignore_errors=True)
                    detail += f"; not written: the bundle already at {final} passed its gates and is kept"
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                for d in reversed(created):
                    if d.exists() and not any(d.iterdir()):
                        d.rmdir()
                raise
            results.append(BundleResult(target, precision, final, manifest, passed, detail,
                                        time.perf_counter() - t0, crops))
            progress.advance(job)
        progress.update(job, description=escape(f"bundled {spec.name}"))
    return results


def _validate(bundle_dir: Path, manifest: Manifest, tiles, refs, reference, loaded, latency_runs: int, conv=None):
    """Fill ``manifest.metrics``; return (passed, one-line detail, crops for the report)."""
    from restorekit.eval.fidelity import compare, latency_side_by_side
    from restorekit.eval.sanity import SANITY_BARS
    from restorekit.runtime import load_bundle

    bar = MIN_FIDELITY_DB[manifest.precision]
    m = manifest.metrics
    m.update({k: None for k in METRIC_KEYS})
    if manifest.target == "coreml" and platform.system() != "Darwin":
        from restorekit.eval.structure import coreml_structure
        from restorekit.runtime.coreml import COREML_NEEDS_MACOS

        st = coreml_structure(bundle_dir / manifest.model_file, manifest)
        # a detector's refs are whole photos' detections, not pixels: its Core ML bundles are checked structurally
        simulate = manifest.precision == "fp16" and manifest.task != "detect"
        sim = simulate_fp16(loaded.module, tiles, refs, manifest.recipe) if simulate else None
        if conv is not None and conv.decompressed_weights is not None:
            sim = _simulate_weights(loaded.module, conv.decompressed_weights, tiles, refs)
        if conv is not None and conv.simulation is not None:
            sim = _simulate_module(conv.simulation, tiles, refs)
        m.update({"validated": False, "not_validated_reason": COREML_NEEDS_MACOS + "; checked structurally",
                  "structure_ok": st["ok"], "structure_checks": [f"{'✓' if ok else '✗'} {n}: {d}" for n, ok, d in st["checks"]],
                  "mil_ops": st["ops"], "device": "not run (Linux)"})
        quantized_acts = conv is not None and conv.simulation is not None
        compressed = conv is not None and (conv.decompressed_weights is not None or quantized_acts)
        if sim is not None:
            key = ("simulated_w8a8_psnr_db" if quantized_acts else "simulated_weights_psnr_db" if compressed
                   else "simulated_fp16_psnr_db")
            m[key] = round(sim, 3)
        failed = [f"{n} ({d})" for n, ok, d in st["checks"] if not ok]
        detail = "structure ✓" if not failed else "structure ✗ " + "; ".join(failed)
        if sim is not None:
            kind = ("fp16" if manifest.precision == "fp16" else "fake-quantized w8a8" if quantized_acts
                    else "decompressed-weights")
            detail += f", PyTorch {kind} simulation {sim:.1f} dB"
        if compressed:  # the weights' numeric effect is known here: gate on it like a measured bundle
            m["min_fidelity_db"] = bar
            detail += f" (bar {bar:.0f})"
            return st["ok"] and sim >= bar, detail, {}
        return st["ok"], detail, {}
    bundle = load_bundle(bundle_dir, allow_failed=True)
    if manifest.task == "detect":
        return _validate_detector(bundle, manifest, tiles, reference, latency_runs)
    fid = compare(bundle.session, tiles, refs)
    (p50, p95), (r50, r95) = latency_side_by_side(bundle.session, reference, tiles[0].x, runs=latency_runs)
    fid.latency_ms_p50, fid.latency_ms_p95, fid.reference_latency_ms_p50, fid.reference_latency_ms_p95 = p50, p95, r50, r95
    fid.latency_input = "x".join(str(s) for s in tiles[0].x.shape)
    m.update(fid.to_metrics())
    m.update({"per_image": fid.per_image, "device": bundle.session.device, "reference_device": reference.device,
              "validated": True, "not_validated_reason": None, "min_fidelity_db": bar,
              "sanity_bars": asdict(SANITY_BARS)})
    # an output-sanity failure (flat, noise, colour cast; eval/sanity.py) fails the bundle like a missed bar
    passed = fid.nonfinite == 0 and fid.fidelity_psnr_db >= bar and bool(fid.sanity_passed)
    # ORT's x86 CPU kernels and LiteRT's CPU compute an fp16 model in float32: the fp16 arithmetic of a GPU,
    # TensorRT or the GPU delegate is simulated in PyTorch half, with the layers fp16 safety kept in fp32
    sim = simulate_fp16(loaded.module, tiles, refs, manifest.recipe) if manifest.precision == "fp16" else None
    if sim is not None:
        m["simulated_fp16_psnr_db"] = round(sim, 3)
        passed = passed and sim >= bar
    mark = "✓" if passed else "✗"
    detail = f"{mark} PSNR {fid.fidelity_psnr_db:.1f} dB (bar {bar:.0f}), max |diff| {fid.max_abs_err:.2e}"
    if sim is not None:
        detail += f", fp16 arithmetic (PyTorch half) {sim:.1f} dB"
    bad = fid.sanity_failures
    detail += f", sanity ✗ {bad[0]}" + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "") if bad else ", sanity ✓"
    out = bundle.session.run(tiles[0].x)
    x = tiles[0].x
    crops = {"input": viewable(manifest.task, x), "reference": viewable(manifest.task, refs[0], x),
             "bundle": viewable(manifest.task, out, x)}
    return passed, detail, crops


def _validate_detector(bundle, manifest: Manifest, tiles, reference, latency_runs: int):
    """A detector bundle against its reference on the eval photos: raw outputs and decoded faces."""
    from restorekit.eval.detection import compare_detector
    from restorekit.eval.fidelity import latency_side_by_side
    from restorekit.runtime.detect import detector_input

    images = [(t.name, t.x[0].transpose(1, 2, 0)) for t in tiles]
    res = compare_detector(bundle.session, reference, images)
    x, _ = detector_input(bundle.session, images[0][1], 1.0)
    (p50, p95), (r50, _) = latency_side_by_side(bundle.session, reference, x, runs=latency_runs)
    m = manifest.metrics
    m.update(res)
    m.update({"latency_ms_p50": round(p50, 3), "latency_ms_p95": round(p95, 3), "reference_latency_ms_p50": round(r50, 3),
              "latency_input": "x".join(map(str, x.shape)), "device": bundle.session.device,
              "reference_device": reference.device, "validated": True, "not_validated_reason": None,
              "min_box_iou": MIN_DETECT_IOU})
    raw_ok = manifest.precision != "fp32" or res["max_abs_err"] <= MAX_DETECT_ERR_FP32
    iou_ok = res["mean_box_iou"] is None or res["mean_box_iou"] >= MIN_DETECT_IOU
    passed = res["nonfinite"] == 0 and res["detections_agree"] and raw_ok and iou_ok
    iou = "–" if res["mean_box_iou"] is None else f"{res['mean_box_iou']:.3f}"
    detail = (f"{'✓' if passed else '✗'} faces {res['faces_matched']}/{res['faces_reference']} matched "
              f"({res['faces_bundle']} found), box IoU {iou}, landmarks ≤ {res['max_landmark_err_px'] or 0:.2f} px, "
              f"raw max |diff| {res['max_abs_err']:.2e}" + (f" (bar {MAX_DETECT_ERR_FP32:g})" if manifest.precision == "fp32" else ""))
    return passed, detail, {}


def _simulated_psnr(net, tiles, refs, half: bool = False) -> float:
    """Mean PSNR of a PyTorch stand-in for a bundle (run in fp16 with ``half``) against the references."""
    import torch

    from restorekit.core.metrics import psnr
    from restorekit.eval.fidelity import psnr_peak

    vals = []
    with torch.inference_mode():
        for t, r in zip(tiles, refs):
            x = torch.from_numpy(t.x)
            y = net(x.half()).float() if half else net(x)
            vals.append(psnr(np.nan_to_num(y.numpy()), r, peak=psnr_peak(r)))
    return float(np.mean(vals))


def simulate_fp16(module, tiles, refs, recipe: dict | None = None) -> float | None:
    """PSNR of the PyTorch graph run in fp16 vs fp32: how an fp16 program behaves numerically, with
    the modules its fp16 safety check kept in fp32 (``recipe["fp16_kept_float"]``) run in fp32.
    Where the PyTorch model cannot run in half on the CPU (LaMa's FFT has no fp16 kernel,
    CodeFormer's codebook lookup casts to float) it is run through its exact rewrites
    (``HALF_SIMULATION_REWRITES``: DFT matmuls, a gather lookup), in fp16 like the rest. None when
    an op still cannot."""
    from restorekit.convert.rewrites import apply_rewrites
    from restorekit.quantize.fp16 import half_except

    kept = (recipe or {}).get("fp16_kept_float")
    try:
        return _simulated_psnr(half_except(module, kept), tiles, refs, half=True)
    except (NotImplementedError, RuntimeError):  # e.g. "Unsupported dtype Half" in torch.fft on CPU
        pass
    rewritten, applied = apply_rewrites(module, HALF_SIMULATION_REWRITES)
    if not applied:
        return None
    try:
        return _simulated_psnr(half_except(rewritten, kept), tiles, refs, half=True)
    except (NotImplementedError, RuntimeError):
        return None


#: Exact (fp32, >= 60 dB) rewrites that let a model run in PyTorch half on the CPU for the fp16 simulation.
HALF_SIMULATION_REWRITES = ("fft_matmul", "codeformer")


def _simulate_module(sim, tiles, refs) -> float:
    """PSNR of a PyTorch simulation of a Core ML program (fake-quantized w8a8) against the references."""
    return _simulated_psnr(sim, tiles, refs)


def _simulate_weights(module, weights, tiles, refs) -> float:
    """PSNR of the PyTorch model run with a compressed Core ML program's decompressed weights."""
    from restorekit.quantize.coreml import with_weights

    sim, _ = with_weights(module, weights)
    return _simulated_psnr(sim, tiles, refs)
