"""The models of the restore pipeline, resolved from what the user gives: a bundle directory (run
by the runtime, torch-free), a checkpoint (run in PyTorch), or nothing (restorekit's own weights)."""

from __future__ import annotations

from pathlib import Path

from restorekit.core.errors import BadInputError
from restorekit.restore.pipeline import Model, PipelineModels, RestoreOptions, check_scale

#: Tile side of a checkpoint run in PyTorch, per stage task (others: DEFAULT_TILE).
SCRATCH_TILE, DEFAULT_TILE = 512, 256
#: ``restore --bundles DIR``: the precision taken when a task has several bundles for the target.
PRECISION_PREFERENCE = ("int8", "mixed", "fp16", "w8", "fp32")
#: The pipeline model each bundle task serves, with the option that gives it explicitly.
TASK_OPTIONS = {"restore": "--bundle", "scratch": "--detector", "detect": "--face-detector", "face": "--face-model",
                "colorize": "--colorize", "inpaint": "--inpainter"}


def bundles_by_task(folder: str | Path, target: str) -> dict[str, Path]:
    """The bundle of each task under ``folder`` (``<model>/<target>-<precision>/manifest.json``, as
    ``restorekit bundle --out`` lays them out) for ``target``, in ``PRECISION_PREFERENCE`` order;
    bundles that failed their gates when built are passed over.
    An SR bundle serves as the restorer when there is no restoration bundle; two models of one
    task are ambiguous (pass the one to use with its option)."""
    from restorekit.bundle.manifest import read_manifest

    from restorekit.core.targets import TARGETS

    if target not in TARGETS:
        raise BadInputError(f"--target: unknown target {target!r} (choose from {', '.join(TARGETS)})")
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"--bundles: not a directory: {folder}")
    found: dict[str, dict[str, dict[str, Path]]] = {}  # task -> model name -> precision -> bundle
    for path in sorted(folder.glob(f"*/{target}-*/manifest.json")):
        try:
            m = read_manifest(path.parent)
        except BadInputError:
            continue  # not a bundle restorekit can read: `restorekit inspect` says why
        if m.metrics.get("gates_passed") is False:
            continue  # failed its gates when built: only by name, with --allow-unvalidated
        found.setdefault(m.task, {}).setdefault(m.name, {})[m.precision] = path.parent
    if "restore" not in found and "sr" in found:
        found["restore"] = found.pop("sr")
    picked = {}
    for task, models in found.items():
        if task not in TASK_OPTIONS:
            continue
        if len(models) > 1:
            raise BadInputError(f"--bundles: {len(models)} {task} models in {folder} ({', '.join(sorted(models))}): "
                                f"choose one with {TASK_OPTIONS[task]}")
        (by_precision,) = models.values()
        order = [p for p in PRECISION_PREFERENCE if p in by_precision] + sorted(by_precision)
        picked[task] = by_precision[order[0]]
    return picked


def fits_stage(task: str, scale: int, need: str) -> bool:
    """Whether a model of ``task`` at ``scale`` can serve a stage that needs ``need``: an SR model
    restores too, a restoration model that upscales serves the sr stage, and any restoration
    model can restore aligned faces."""
    return (task == need or (need == "restore" and task == "sr") or (need == "sr" and task == "restore" and scale > 1)
            or (need == "face" and task in ("restore", "sr")))


def _a(task: str) -> str:
    """``task`` with its indefinite article ("a colorize", "an inpaint")."""
    return f"{'an' if task[0] in 'aeiou' else 'a'} {task}"


def pipeline_model(ref: str | None, task: str, provider: str = "cpu", threads: int | None = None,
                   allow_failed: bool = False) -> Model:
    """A pipeline Model for a stage that needs ``task``: from a bundle directory (one that failed its
    build's gates only with ``allow_failed``), a checkpoint, or (None) restorekit's own weights."""
    if ref is not None and Path(ref).is_dir():
        from restorekit.runtime import load_bundle

        b = load_bundle(ref, provider=provider, threads=threads, allow_failed=allow_failed)
        if not fits_stage(b.manifest.task, b.manifest.scale, task):
            raise BadInputError(f"{ref} is {_a(b.manifest.task)} bundle; this stage needs {_a(task)} model")
        t = b.manifest.tiling
        return Model(b.session, f"{b.manifest.name} {b.manifest.target}-{b.manifest.precision} ({b.session.device})",
                     b.manifest.scale, t.get("tile"), t.get("overlap", 32), t.get("multiple_of", 1))
    try:
        from restorekit.models.loader import load_model
        from restorekit.models.reference import TorchSession
    except ImportError:
        raise BadInputError(f"no {task} model: pass a bundle directory, or `--bundles DIR` with the output of the "
                            "main job (`restorekit bundle --out DIR` on a machine with restorekit[all] bundles the "
                            "restorer and the scratch detector); restorekit's own PyTorch weights need "
                            "restorekit[all]") from None
    if ref is None and task == "scratch":
        from restorekit.models.builtin import SCRATCH_WEIGHTS

        ref = str(SCRATCH_WEIGHTS)
    loaded = load_model(ref)
    if not fits_stage(loaded.spec.task, loaded.spec.scale, task):
        raise BadInputError(f"{loaded.spec.name} is {_a(loaded.spec.task)} model; this stage needs {_a(task)} model")
    fixed = loaded.spec.fixed_size  # a face model takes the whole aligned face at its size, never tiles of it
    session = TorchSession(loaded.module, fixed_size=(fixed, fixed) if fixed else None)
    return Model(session, f"{loaded.spec.name} ({session.device})", loaded.spec.scale,
                 fixed or (SCRATCH_TILE if task == "scratch" else DEFAULT_TILE), 32, loaded.spec.multiple_of)


#: The zoo entry of the face detector ``restore`` uses by default once it is fetched.
FACE_DETECTOR_ZOO_NAME = "retinaface_mobilenet0.25"


def cached_face_detector() -> str | None:
    """The face detector's weights when ``restorekit zoo fetch retinaface_mobilenet0.25`` installed
    them (verified) and PyTorch is here to run them; else None (the faces stage then says how to get it)."""
    import importlib.util

    from restorekit.models.zoo import cached_path

    path = cached_path(FACE_DETECTOR_ZOO_NAME)
    if path is None:
        return None
    try:
        has_torch = importlib.util.find_spec("torch") is not None
    except ImportError:  # an import hook that refuses torch outright
        return None
    return str(path) if has_torch else None


def load_pipeline_models(options: RestoreOptions, restorer: str | None = None, detector: str | None = None,
                         face_detector: str | None = None, face_restorer: str | None = None, upscaler: str | None = None,
                         reference: bool = False, provider: str = "cpu", threads: int | None = None,
                         colorizer: str | None = None, inpainter: str | None = None,
                         bundles: str | None = None, target: str = "onnx", allow_failed: bool = False) -> PipelineModels:
    """Load the models the stages in ``options`` need (bundle directories, checkpoints, or None for
    the built-in ones; a face detector enables the faces stage, an upscaler the sr stage, a
    colorizer the colorize stage, an inpainter replaces OpenCV's in the defects stage). ``bundles``:
    a folder of bundles (``restorekit bundle --out``) from which each stage not given explicitly
    takes its bundle for ``target`` by task (``bundles_by_task``).

    ``reference``: also the full-precision reference of each bundle's stage (restore, defects,
    face-detect, faces, sr, colorize, inpaint), in PyTorch from the checkpoint the bundle was made
    from; a stage already run by a PyTorch model is its own reference. ``allow_failed``: also bundles that failed their
    build's gates."""
    wants = options.stages
    if bundles is not None:
        found = {task: str(path) for task, path in bundles_by_task(bundles, target).items()}
        for task, stage in (("restore", "restore"), ("scratch", "defects")):
            if stage in wants and found.get(task) is None and {"restore": restorer, "scratch": detector}[task] is None:
                raise BadInputError(f"--bundles: no {task} bundle for {target} in {bundles}, which the {stage} stage "
                                    f"needs: make it with `restorekit bundle --targets {target} --out {bundles}` "
                                    f"(the main job), or leave the stage out with --stages")
        restorer, detector = restorer or found.get("restore"), detector or found.get("scratch")
        face_detector, face_restorer = face_detector or found.get("detect"), face_restorer or found.get("face")
        colorizer, inpainter = colorizer or found.get("colorize"), inpainter or found.get("inpaint")
    if face_detector is None and "faces" in wants:
        face_detector = cached_face_detector()
    m = PipelineModels()
    m.restorer = pipeline_model(restorer, "restore", provider, threads, allow_failed) if "restore" in wants else None
    m.detector = pipeline_model(detector, "scratch", provider, threads, allow_failed) if "defects" in wants else None
    if face_detector is not None and "faces" in wants:
        if not Path(face_detector).exists():
            raise BadInputError(f"face detector not found: {face_detector} (a detect bundle directory or "
                                "RetinaFace-MobileNet0.25 weights)")
        m.face_detector = pipeline_model(face_detector, "detect", provider, threads, allow_failed)
    if upscaler is not None and "sr" in wants:
        m.upscaler = pipeline_model(upscaler, "sr", provider, threads, allow_failed)
    if face_restorer is not None and m.face_detector is not None:
        m.face_restorer = pipeline_model(face_restorer, "face", provider, threads, allow_failed)
    m.colorizer = pipeline_model(colorizer, "colorize", provider, threads, allow_failed) if colorizer is not None else None
    if inpainter is not None and "defects" in wants:
        m.inpainter = pipeline_model(inpainter, "inpaint", provider, threads, allow_failed)
    check_scale(options, m.restorer, m.upscaler)
    if reference:
        for stage, model, ref_of, task in (("restore", m.restorer, restorer, "restore"),
                                           ("defects", m.detector, detector, "scratch"),
                                           ("face-detect", m.face_detector, face_detector, "detect"),
                                           ("faces", m.face_restorer, face_restorer, "face"),
                                           ("sr", m.upscaler, upscaler, "sr"),
                                           ("colorize", m.colorizer, colorizer, "colorize"),
                                           ("inpaint", m.inpainter, inpainter, "inpaint")):
            if model is None:
                continue
            if ref_of is not None and Path(ref_of).is_dir():  # a bundle: its source checkpoint in PyTorch
                from restorekit.bundle.manifest import read_manifest
                from restorekit.models.loader import default_reference

                ref_model = pipeline_model(default_reference(read_manifest(ref_of)), task, "cpu", threads)
                # the same windows as the bundle: its tile, overlap and (fixed or planned) tile size
                ref_model.tile, ref_model.overlap = model.tile, model.overlap
                ref_model.session.fixed_size = model.session.fixed_size
                m.references[stage] = ref_model
            else:
                m.references[stage] = model  # already the full-precision model: the comparison is exact
    return m
