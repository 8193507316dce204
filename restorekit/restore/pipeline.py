"""The old-photo restoration pipeline, on edge bundles (or their PyTorch references).

The pipeline is a list of :class:`Stage` objects (``PIPELINE``), run in order by
:func:`restore_photo` on a shared :class:`Context`: each says whether it ``applies`` to this photo
and ``run`` s, or gives the ``reason`` it did not; every stage is logged (what ran, on what, with
which settings, how long, what it found):

1. ``assess``   damage assessment (``restore.assess``): drives the ``auto`` choices below;
2. ``defects``  scratch/dust/tear mask from a detector session, filled by an inpainting model
                (``--inpainter``: a LaMa bundle; each damaged region cut out with context at
                the model's tile, only the masked pixels pasted back) or OpenCV Telea;
3. ``restore``  denoise / deblock / deblur + 2x with a restoration session, tiled;
4. ``faces``    (given a face detector: a detect bundle or RetinaFace weights) detection,
                logged as ``face-detect`` and run on the input before ``defects`` so facial
                features are kept from inpainting; alignment of each face to the 512x512 FFHQ
                template, restoration by the face model (``--face-model``; else the restoration
                model), blend with the input face by
                ``face_strength``, feathered paste-back (``restore.faces``); faces under 32 px
                across the eyes are reported and left alone;
5. ``tone``     contrast restoration on L* when the print is faded (tonal range < 85 or
                contrast < 18): a percentile stretch with the gain capped at 1.6;
6. ``cast``     colour-cast removal for colour prints (a*b* shift that moves the likely-neutral
                mid-tones 70 % of the way to neutral, at most 10 units, when their cast exceeds
                6); sepia and B&W prints keep their tone;
7. ``sr``       (given an upscaler, ``--sr``) super-resolution by any SR bundle, tiled; the
                restoration stage then works at the input's size;
8. ``colorize`` (given a colorizer, ``--colorize``: a DDColor bundle) on photos assessed
                black-and-white or sepia: the photo's lightness, rendered as gray RGB at the
                model's input size, goes to the model; its a*, b* are resized to the photo and
                merged with the photo's own full-resolution L* (``runtime.task_io``). Colour
                photos skip it with the reason; asked for without a model, it is logged skipped.

The output keeps the input's alpha (resized with it) and is at ``scale`` x the input (1 = same
size, a larger result is reduced with area averaging; up to the upscaler's or restorer's scale).

Samples: a photo read as 8- or 16-bit samples stays so; each stage declares what it reads
(``Stage.needs``) and is converted to only then. Tiled stages write the photo's own samples as
each band of output rows is finished, or 16-bit samples for an 8-bit photo that a later stage
regrades (``Stage.regrades``), so the result is rounded to 8 bits once; tone and cast measure
every ``STATISTICS_STRIDE``-th row and column and change the image a band of rows at a time.
No photo-sized float32 copy is made on that path (a float photo stays float32).
"""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass, field
from typing import Callable

import cv2
import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.image import Photo, as_samples
from restorekit.restore.assess import Assessment, assess, lab, neutral_cast
from restorekit.restore.defects import INPAINT_TILE, detect_defects, inpaint, inpaint_with_model
from restorekit.runtime.detect import Face
from restorekit.runtime.session import Session, TimedSession
from restorekit.runtime.tiling import planned_tile, run_tiled

STAGES = ("defects", "restore", "faces", "tone", "cast", "sr")
MAX_SCALE = 8
FADED_RANGE, FLAT_CONTRAST, MAX_TONE_GAIN = 85.0, 18.0, 1.6
CAST_LIMIT = 6.0
COLORIZE_TONES = ("bw", "sepia")  # the assessed tones the colorize stage runs on
COLORIZE_SIDE = 256  # a dynamic-shape colorizer's input side when its manifest gives no tile


@dataclass
class Model:
    """A session with what the pipeline needs to run it tiled, and a name for the log."""

    session: Session
    name: str
    scale: int = 1
    tile: int | None = 256
    overlap: int = 32
    multiple_of: int = 1


@dataclass
class RestoreOptions:
    """What to run: the stages asked for, the output scale, colorization, and the stage settings."""

    stages: tuple[str, ...] = STAGES
    scale: int = 1
    colorize: bool = False
    defect_threshold: float = 0.5
    face_strength: float = 0.7

    def __post_init__(self):  # checked before any model is loaded
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise BadInputError(f"unknown stage(s) {', '.join(sorted(unknown))}: choose from {', '.join(STAGES)}")
        if not 1 <= self.scale <= MAX_SCALE:
            raise BadInputError(f"--scale must be within 1..{MAX_SCALE}, got {self.scale}")
        if not 0.0 <= self.face_strength <= 1.0:
            raise BadInputError(f"--strength must be within 0..1, got {self.face_strength}")


@dataclass
class RestoreResult:
    """The restored photo and the JSON-ready log of every stage."""

    photo: Photo
    log: dict = field(default_factory=dict)


#: Tone and cast measure every ``STATISTICS_STRIDE``-th row and column of the image they change (a
#: quarter of its pixels at 2: percentiles and means that differ from the full image's by far less
#: than an 8-bit level of the result), and change it a band of ``BAND_PIXELS`` at a time.
STATISTICS_STRIDE = 2
BAND_PIXELS = 1 << 20


def _statistics_lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB of every ``STATISTICS_STRIDE``-th row and column of ``rgb`` (any samples)."""
    return lab(as_samples(np.ascontiguousarray(rgb[::STATISTICS_STRIDE, ::STATISTICS_STRIDE]), np.float32))


def _per_band(rgb: np.ndarray, change: Callable[[np.ndarray], None], out_dtype=None,
              in_place: bool = False) -> np.ndarray:
    """``rgb`` changed by ``change`` (in place, on a float32 band of rows in [0, 1]) a band at a time,
    on every core this process may use (``core.threads``; the stage runs alone), as ``out_dtype``
    samples (default: ``rgb``'s type); with ``in_place`` and no other type, in ``rgb`` itself.
    Integer samples are converted per band and rounded back, so no photo-sized float copy is made."""
    from concurrent.futures import ThreadPoolExecutor

    from restorekit.core.threads import work_threads

    dtype = rgb.dtype if out_dtype is None else np.dtype(out_dtype)
    out = rgb if in_place and dtype == rgb.dtype else np.empty(rgb.shape, dtype)
    h, w = rgb.shape[:2]
    rows = max(1, BAND_PIXELS // max(w, 1))

    def one(top: int) -> None:
        band = rgb[top:top + rows]
        if out is rgb and band.dtype == np.float32 and band.flags.c_contiguous:
            change(band)
        else:
            work = band.copy() if band.dtype == np.float32 else np.ascontiguousarray(as_samples(band, np.float32))
            change(work)
            out[top:top + rows] = as_samples(work, out.dtype)

    tops = range(0, h, rows)
    workers = min(work_threads(), len(tops))
    if workers <= 1:
        for top in tops:
            one(top)
    else:  # numpy and OpenCV release the GIL on a band
        with ThreadPoolExecutor(workers, thread_name_prefix="restorekit-band") as pool:
            list(pool.map(one, tops))
    return out


def _in_lab(band: np.ndarray, change_lab: Callable[[np.ndarray], None]) -> None:
    """``change_lab`` applied to the CIELAB of a float32 RGB band, converted back and clipped, in place."""
    L = cv2.cvtColor(band, cv2.COLOR_RGB2LAB, dst=band)
    change_lab(L)
    cv2.cvtColor(L, cv2.COLOR_Lab2RGB, dst=band)
    np.clip(band, 0, 1, out=band)


def stretch_tone(rgb: np.ndarray, in_place: bool = False, out_dtype=None) -> tuple[np.ndarray, dict]:
    """Stretch L* so its 0.5-99.5th percentiles (of the statistics rows and columns) span 2-98, gain
    capped, keeping a*b*; ``rgb`` is float in [0, 1] or integer samples, returned in its type (with
    ``in_place``, in its own memory) or as ``out_dtype`` samples."""
    lo, hi = np.percentile(_statistics_lab(rgb)[:, :, 0], [0.5, 99.5])
    gain = min((98.0 - 2.0) / max(hi - lo, 1e-3), MAX_TONE_GAIN)

    def stretch(L: np.ndarray) -> None:
        light = L[:, :, 0]
        light -= lo
        light *= gain
        light += 2.0
        np.clip(light, 0, 100, out=light)

    out = _per_band(rgb, lambda band: _in_lab(band, stretch), out_dtype, in_place)
    return out, {"L_low": round(float(lo), 2), "L_high": round(float(hi), 2), "gain": round(float(gain), 3)}


def remove_cast(rgb: np.ndarray, strength: float = 0.7, max_shift: float = 10.0,
                in_place: bool = False, out_dtype=None) -> tuple[np.ndarray, dict]:
    """Shift a*b* so the likely-neutral mid-tones (``neutral_cast``, of the statistics rows and
    columns) move ``strength`` of the way to neutral, by at most ``max_shift`` a*b* units (a scene
    that really is one colour is not pushed to its complement); ``rgb`` as in :func:`stretch_tone`."""
    ca, cb = neutral_cast(_statistics_lab(rgb))
    da, db = -strength * ca, -strength * cb
    norm = float(np.hypot(da, db))
    if norm > max_shift:
        da, db = da * max_shift / norm, db * max_shift / norm

    def shift(L: np.ndarray) -> None:
        L[:, :, 1] += da
        L[:, :, 2] += db

    out = _per_band(rgb, lambda band: _in_lab(band, shift), out_dtype, in_place)
    return out, {"shift_a": round(da, 2), "shift_b": round(db, 2)}


def check_scale(options: RestoreOptions, restorer: Model | None, upscaler: Model | None) -> None:
    """``options.scale`` must be reachable by a model of the pipeline (or be 1 or 2, which the
    built-in 2x restorer, or at worst bicubic, reaches): no silent 8x bicubic."""
    top = max(2, upscaler.scale if upscaler is not None and "sr" in options.stages else 1,
              restorer.scale if restorer is not None and "restore" in options.stages else 1)
    if options.scale > top:
        raise BadInputError(f"--scale {options.scale} needs an upscaler of at least that scale (--sr MODEL); "
                            f"the models given reach {top}x")


def _plan(model: Model) -> int | None:
    """The largest tile side ``model`` runs in (:func:`planned_tile`: twice its tile for a model of
    dynamic input size)."""
    return planned_tile(model.tile, None, model.session.fixed_size)


def _tiled(model: Model, rgb: np.ndarray, samples: np.dtype) -> np.ndarray:
    """``model`` run on ``rgb`` in its tiles (the plan of ``restorekit run``: :func:`planned_tile`),
    out in ``samples``: integer samples (rounded and saturated as each band of rows is finished), or
    float32 clipped to [0, 1]."""
    out = run_tiled(model.session, rgb, model.scale, tile=_plan(model), overlap=model.overlap,
                    multiple_of=model.multiple_of, out_dtype=samples)
    return out if out.dtype.kind == "u" else np.clip(out, 0, 1, out=out)


def _versus(ref: Model, edge_out: np.ndarray, t0: float, run_ref: Callable[[], np.ndarray]) -> tuple[dict, np.ndarray]:
    """Run the reference on the same stage input; its log entry (PSNR of the edge output against
    it, both latencies; the edge stage started at ``t0``) and its output."""
    from restorekit.core.metrics import psnr

    edge_s = time.perf_counter() - t0
    t1 = time.perf_counter()
    ref_out = run_ref()
    unit = lambda rgb: np.clip(as_samples(rgb, np.float32), 0, 1)  # noqa: E731
    return ({"backend": ref.name, "psnr_db": round(psnr(unit(edge_out), unit(ref_out)), 2),
             "edge_seconds": round(edge_s, 3), "reference_seconds": round(time.perf_counter() - t1, 3)}, ref_out)


def _with_reference(vs_ref: dict | None) -> dict:
    """The ``vs_reference`` log field, present only when the stage was compared."""
    return {"vs_reference": vs_ref} if vs_ref else {}


@dataclass
class PipelineModels:
    """The models of one restore run (None: that stage has no model) and the references to compare with."""

    restorer: Model | None = None
    detector: Model | None = None
    face_detector: Model | None = None
    upscaler: Model | None = None
    face_restorer: Model | None = None
    colorizer: Model | None = None
    inpainter: Model | None = None
    references: dict[str, Model] = field(default_factory=dict)


@dataclass
class Context:
    """One photo on its way through the stages: the image so far, the models, what was found."""

    photo: Photo
    options: RestoreOptions
    rgb: np.ndarray
    models: PipelineModels
    found: Assessment | None = None  # the damage assessment of the input
    faces: list[Face] | None = None  # face detections on the input (shared by the defects guard and the faces stage)
    scale: int = 1  # the size of ``rgb`` over the input's

    @property
    def input_size(self) -> tuple[int, int]:
        """(height, width) of the input photo."""
        return self.photo.rgb.shape[:2]

    @property
    def use_sr(self) -> bool:
        """Whether the sr stage upscales (then the restoration stage works at the input's size)."""
        return self.models.upscaler is not None and "sr" in self.options.stages

    def wants(self, stage: str) -> bool:
        """Whether ``stage`` was asked for."""
        return stage in self.options.stages

    def own_rgb(self) -> np.ndarray:
        """``rgb`` as the pipeline's own array, to change in place (a copy while it is still the photo's)."""
        if self.rgb is self.photo.rgb:
            self.rgb = self.rgb.copy()
        return self.rgb

    @property
    def samples(self) -> np.dtype:
        """The photo's own samples (uint8 / uint16), or float32 for a photo read as float: the type of the result."""
        return self.photo.rgb.dtype if self.photo.rgb.dtype.kind == "u" else np.dtype(np.float32)

    def made_by(self, stage: Stage) -> np.dtype:
        """The samples ``stage`` makes (a tiled stage, tone, cast): the photo's own when its image goes
        out as it is; uint16 for an 8-bit photo that a later stage regrades (tone, cast, faces,
        colorize: rounded to 8 bits once, at the end; half of float32's memory); float32 for a photo
        read as float."""
        own = self.samples
        if own != np.uint8:
            return own
        later = PIPELINE[PIPELINE.index(stage) + 1:]
        return np.dtype(np.uint16) if any(s.regrades and s.applies(self) for s in later) else own


class Stage:
    """A pipeline step: ``applies`` says whether it runs on this photo, ``run`` does it and returns
    the fields it logs, ``reason`` says why it did not run (None: it is left out of the log)."""

    name = ""
    #: The samples the stage reads ``ctx.rgb`` in: "float32" (in [0, 1]), "uint8" / "uint16", or "any"
    #: (as they come: a tiled model converts tile by tile). The pipeline converts ``ctx.rgb`` before a
    #: stage that needs another type, and never otherwise: a photo read as integer samples stays so
    #: until a stage needs float.
    needs = "float32"
    #: Whether the stage changes the image outside a model's tiles (its input then deserves more than 8 bits).
    regrades = False

    def applies(self, ctx: Context) -> bool:
        """Whether the stage runs on this photo."""
        return False

    def run(self, ctx: Context) -> dict:
        """Run the stage on ``ctx`` (updating it); the fields of its log entry."""
        return {}

    def reason(self, ctx: Context) -> str | None:
        """Why the stage did not run, or None to leave it out of the log."""
        return "not requested" if not ctx.wants(self.name) else None


class Assess(Stage):
    """Damage assessment of the input: drives the tone and cast choices."""

    name = "assess"

    needs = "any"  # measured on float samples of its own (a temporary copy for integer samples)

    def applies(self, ctx: Context) -> bool:
        """Always."""
        return True

    def run(self, ctx: Context) -> dict:
        """Measure the input."""
        ctx.found = assess(ctx.rgb)
        return {"found": ctx.found.to_dict()}


class FaceDetect(Stage):
    """Face detection on the input, before ``defects``, so facial features are kept from inpainting."""

    name = "face-detect"

    def applies(self, ctx: Context) -> bool:
        """The faces stage was asked for and a face detector given."""
        return ctx.wants("faces") and ctx.models.face_detector is not None

    def run(self, ctx: Context) -> dict:
        """Detect the faces (and, given a reference detector, compare the two)."""
        from restorekit.runtime.detect import detect_faces

        t0 = time.perf_counter()
        session, vs_ref = ctx.models.face_detector.session, None
        if "face-detect" in ctx.models.references:
            from restorekit.eval.detection import SCORE_MARGIN, SameInput, agreement
            from restorekit.restore.faces import FaceOptions

            # detected once per side, down to the comparison's margin; the pipeline keeps the
            # faces at its own threshold (the same faces a detection at that threshold gives)
            threshold = FaceOptions().threshold
            low = detect_faces(session, ctx.rgb, threshold - SCORE_MARGIN)
            edge_s = time.perf_counter() - t0
            ref = ctx.models.references["face-detect"]
            t1 = time.perf_counter()
            ref_low = detect_faces(SameInput(ref.session, session.fixed_size), ctx.rgb, threshold - SCORE_MARGIN)
            ref_s = time.perf_counter() - t1
            ctx.faces = [f for f in low if f.score >= threshold]
            vs_ref = {"backend": ref.name, **agreement(ref_low, low, threshold).to_dict(),
                      "edge_seconds": round(edge_s, 3), "reference_seconds": round(ref_s, 3)}
        else:
            ctx.faces = detect_faces(session, ctx.rgb)
        return {"backend": ctx.models.face_detector.name,
                "found": {"count": len(ctx.faces), "eye_distances_px": [round(f.eye_distance, 1) for f in ctx.faces]},
                **_with_reference(vs_ref)}

    def reason(self, ctx: Context) -> str | None:
        """Not logged when it does not run (the faces stage says why)."""
        return None


class Defects(Stage):
    """Scratch/dust/tear mask from the detector, facial features kept, filled by OpenCV inpainting."""

    name = "defects"

    needs = "any"  # the detector converts tile by tile; Telea fills 8-bit samples

    def applies(self, ctx: Context) -> bool:
        """Asked for, with a scratch detector."""
        return ctx.wants("defects") and ctx.models.detector is not None

    def run(self, ctx: Context) -> dict:
        """Detect, guard the faces, inpaint."""
        t0 = time.perf_counter()
        threshold, rgb, det = ctx.options.defect_threshold, ctx.rgb, ctx.models.detector
        prob = detect_defects(det.session, rgb, tile=_plan(det) if det.tile else 512, overlap=det.overlap)
        mask = prob >= threshold
        vs_ref = None
        if "defects" in ctx.models.references:
            ref = ctx.models.references["defects"]
            vs_ref, ref_prob = _versus(ref, prob, t0, lambda: detect_defects(
                ref.session, rgb, tile=_plan(ref) if ref.tile else 512, overlap=ref.overlap))
            ref_mask = ref_prob >= threshold
            vs_ref["mask_iou"] = round(float((mask & ref_mask).sum() / max((mask | ref_mask).sum(), 1)), 4)
        guarded = None
        if ctx.faces is not None:
            from restorekit.restore.faces import feature_guard

            guard = feature_guard(mask.shape, ctx.faces)
            guarded = {"faces": len(ctx.faces), "pixels_kept": int((mask & guard).sum())}
            mask &= ~guard
        hole = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        filler, vs_inpaint = ctx.models.inpainter, None
        if filler is None:
            # in place: the pipeline's own working copy (the reference detector already ran on it)
            ctx.rgb, how = inpaint(ctx.own_rgb(), hole, in_place=True), "OpenCV Telea, radius 3, mask grown 1 px"
        else:
            t1 = time.perf_counter()
            rgb = as_samples(rgb, np.float32)  # the model's windows are cut from float samples
            ctx.rgb = inpaint_with_model(filler.session, rgb, hole, filler.tile or INPAINT_TILE, filler.multiple_of)
            how = f"{filler.name}, mask grown 1 px"
            if "inpaint" in ctx.models.references and hole.any():
                ref = ctx.models.references["inpaint"]
                vs_inpaint, ref_out = _versus(ref, ctx.rgb[hole], t1, lambda: inpaint_with_model(
                    ref.session, rgb, hole, filler.tile or INPAINT_TILE, filler.multiple_of)[hole])
                vs_inpaint["where"] = "inside the mask"
        ctx.found.defects = float(mask.mean())
        return {"backend": det.name, "settings": {"threshold": threshold, "inpaint": how},
                "found": {"coverage": round(ctx.found.defects, 5), "pixels": int(mask.sum()),
                          "face_features_protected": guarded}, **_with_reference(vs_ref),
                **({"inpaint_vs_reference": vs_inpaint} if vs_inpaint else {})}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, or no detector."""
        return super().reason(ctx) or "no scratch detector"


class Restore(Stage):
    """Denoise / deblock / deblur (+ upscale) with the restoration model, tiled."""

    name = "restore"

    needs = "any"  # tiles are converted one by one (runtime.tiling.run_tiled)

    def applies(self, ctx: Context) -> bool:
        """Asked for, with a restoration model."""
        return ctx.wants("restore") and ctx.models.restorer is not None

    def run(self, ctx: Context) -> dict:
        """Restore; with an upscaler, back at the input's size (the sr stage upscales)."""
        t0 = time.perf_counter()
        stage_in, model = ctx.rgb, ctx.models.restorer
        ctx.rgb = _tiled(model, stage_in, ctx.made_by(self))
        ctx.scale = model.scale
        vs_ref = None
        if "restore" in ctx.models.references:
            vs_ref = _versus(ctx.models.references["restore"], ctx.rgb, t0, lambda: _tiled(ctx.models.references["restore"], stage_in,
                                                                                                   ctx.rgb.dtype))[0]
        if ctx.use_sr and ctx.scale > 1:
            h, w = ctx.input_size
            ctx.rgb = cv2.resize(ctx.rgb, (w, h), interpolation=cv2.INTER_AREA)
            ctx.scale = 1
        return {"backend": model.name, "settings": {"tile": _plan(model), "overlap": model.overlap, "scale": model.scale,
                                                    "output": f"{ctx.scale}x"}, **_with_reference(vs_ref)}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, or no model."""
        return super().reason(ctx) or "no restoration model"


class Faces(Stage):
    """Align each detected face to the FFHQ template, restore it, blend, paste back (``restore.faces``)."""

    name = "faces"
    regrades = True

    def fixer(self, ctx: Context) -> Model | None:
        """The face model: ``face_restorer``, else the restoration model."""
        return ctx.models.face_restorer or ctx.models.restorer

    def applies(self, ctx: Context) -> bool:
        """Asked for, with a face detector and a model to restore faces."""
        return ctx.wants("faces") and ctx.models.face_detector is not None and self.fixer(ctx) is not None

    def run(self, ctx: Context) -> dict:
        """Restore the faces found on the input, at the current scale."""
        from restorekit.restore.faces import FaceOptions, enhance_faces, scaled

        t0 = time.perf_counter()
        fixer, strength, stage_in = self.fixer(ctx), ctx.options.face_strength, ctx.rgb
        known = scaled(ctx.faces, ctx.rgb.shape[0] / ctx.input_size[0])
        fixed = fixer.session.fixed_size
        # a face model with a fixed square input (GFPGAN, CodeFormer: 512) gets faces aligned at that size
        size = fixed[0] if fixed and fixed[0] == fixed[1] and fixer.scale == 1 else FaceOptions().size
        opts = FaceOptions(strength=strength, size=size)
        ctx.rgb, faces = enhance_faces(stage_in, None, fixer.session, opts, fixer.scale, fixer.tile, faces=known)
        vs_ref = None
        if "faces" in ctx.models.references and ctx.models.face_restorer is not None:
            ref = ctx.models.references["faces"]
            vs_ref = _versus(ref, ctx.rgb, t0, lambda: enhance_faces(stage_in, None, ref.session, opts, ref.scale,
                                                                     ref.tile, faces=known)[0])[0]
        return {"backend": f"{ctx.models.face_detector.name}; faces restored by {fixer.name}"
                + ("" if ctx.models.face_restorer else " (the restoration model: no --face-model given)"),
                "settings": {"strength": strength, "aligned_size": size, "min_eye_distance_px": opts.min_eye_distance},
                "found": {"count": len(faces), "enhanced": sum(f["enhanced"] for f in faces), "faces": faces},
                **_with_reference(vs_ref)}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, no face detector, or no model."""
        return super().reason(ctx) or ("no face detector: pass --face-detector (a detect bundle or RetinaFace weights), "
                                       "or run `restorekit zoo fetch retinaface_mobilenet0.25` once: it is then used "
                                       "by default" if ctx.models.face_detector is None
                                       else "no restoration model")


class Tone(Stage):
    """Contrast restoration on L* for a faded print."""

    name = "tone"
    regrades = True

    needs = "any"  # changed a band at a time, in the samples it comes in

    def faded(self, ctx: Context) -> bool:
        """Tonal range under FADED_RANGE or contrast under FLAT_CONTRAST."""
        return ctx.found.tonal_range < FADED_RANGE or ctx.found.contrast < FLAT_CONTRAST

    def applies(self, ctx: Context) -> bool:
        """Asked for, on a faded print."""
        return ctx.wants("tone") and self.faded(ctx)

    def run(self, ctx: Context) -> dict:
        """Stretch L*."""
        ctx.rgb, info = stretch_tone(ctx.own_rgb(), in_place=True, out_dtype=ctx.made_by(self))
        return {"settings": info, "found": {"tonal_range": round(ctx.found.tonal_range, 2),
                                            "contrast": round(ctx.found.contrast, 2)}}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, or not faded."""
        return super().reason(ctx) or (f"not faded (tonal range {ctx.found.tonal_range:.1f} >= {FADED_RANGE:g}, "
                                       f"contrast {ctx.found.contrast:.1f})")


class Cast(Stage):
    """Colour-cast removal for colour prints (sepia and B&W prints keep their tone)."""

    name = "cast"
    regrades = True

    needs = "any"  # changed a band at a time, in the samples it comes in

    def applies(self, ctx: Context) -> bool:
        """Asked for, on a colour print with a cast over CAST_LIMIT."""
        return ctx.wants("cast") and ctx.found.tone == "colour" and ctx.found.cast > CAST_LIMIT

    def run(self, ctx: Context) -> dict:
        """Shift a*b* towards neutral."""
        ctx.rgb, info = remove_cast(ctx.own_rgb(), in_place=True, out_dtype=ctx.made_by(self))
        return {"settings": info, "found": {"cast": round(ctx.found.cast, 2)}}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, not a colour print, or a small cast."""
        found = ctx.found
        return super().reason(ctx) or (f"{found.tone} print keeps its tone" if found.tone != "colour"
                                       else f"cast {found.cast:.1f} <= {CAST_LIMIT:g}")


class SuperResolution(Stage):
    """Upscaling by the upscaler (any SR model), tiled."""

    name = "sr"

    needs = "any"  # tiles are converted one by one (runtime.tiling.run_tiled)

    def applies(self, ctx: Context) -> bool:
        """Asked for, with an upscaler."""
        return ctx.use_sr

    def run(self, ctx: Context) -> dict:
        """Upscale."""
        t0 = time.perf_counter()
        sr_in, model = ctx.rgb, ctx.models.upscaler
        ctx.rgb = _tiled(model, sr_in, ctx.made_by(self))
        ctx.scale *= model.scale
        vs_ref = None
        if "sr" in ctx.models.references:
            vs_ref = _versus(ctx.models.references["sr"], ctx.rgb, t0, lambda: _tiled(ctx.models.references["sr"], sr_in,
                                                                                              ctx.rgb.dtype))[0]
        return {"backend": model.name, "settings": {"tile": _plan(model), "overlap": model.overlap, "scale": model.scale},
                **_with_reference(vs_ref)}

    def reason(self, ctx: Context) -> str | None:
        """Not requested, or no upscaler."""
        return super().reason(ctx) or ("no upscaler (pass --sr MODEL)"
                                       + (f"; {ctx.scale}x from the restoration model" if ctx.scale > 1 else ""))


class Colorize(Stage):
    """Colorization of a black-and-white or sepia photo by the colorizer (DDColor): its a*, b*
    merged with the photo's own L*; logged as skipped when asked for without a model, or when
    the photo is in colour."""

    name = "colorize"
    regrades = True

    def applies(self, ctx: Context) -> bool:
        """A colorizer given and the photo assessed black-and-white or sepia."""
        return ctx.models.colorizer is not None and ctx.found.tone in COLORIZE_TONES

    def run(self, ctx: Context) -> dict:
        """Predict a*, b* at the model's size from the current image's lightness; merge."""
        t0 = time.perf_counter()
        model, stage_in = ctx.models.colorizer, ctx.rgb
        ctx.rgb = colorize(model, stage_in)
        ctx.photo = dataclasses.replace(ctx.photo, was_gray=False)  # written as a colour image from now on
        vs_ref = None
        if "colorize" in ctx.models.references:
            ref = ctx.models.references["colorize"]
            vs_ref = _versus(ref, ctx.rgb, t0, lambda: colorize(ref, stage_in))[0]
        return {"backend": model.name, "settings": {"model_input": colorizer_side(model),
                                                    "merge": "model a*b* resized bilinearly + the photo's L*"},
                "found": {"tone": ctx.found.tone}, **_with_reference(vs_ref)}

    def reason(self, ctx: Context) -> str | None:
        """No model (logged only when asked for or the photo is black-and-white), or a colour photo."""
        if ctx.models.colorizer is not None:
            return f"a {ctx.found.tone} photo keeps its colours (colorization runs on bw and sepia photos)"
        if not (ctx.options.colorize or ctx.found.tone == "bw"):
            return None
        return ("no colorization model (pass --colorize BUNDLE: a DDColor bundle)"
                + ("" if ctx.options.colorize else " (the photo is black-and-white)"))


def colorizer_side(model: Model) -> tuple[int, int]:
    """(height, width) the colorizer takes: its fixed input, else its tile."""
    if model.session.fixed_size is not None:
        return tuple(model.session.fixed_size)
    side = model.tile or COLORIZE_SIDE
    return side, side


def colorize(model: Model, rgb: np.ndarray) -> np.ndarray:
    """``rgb`` colorized: its lightness at the model's size (gray RGB) in, a*b* out, merged with
    ``rgb``'s own full-resolution L*."""
    from restorekit.runtime.task_io import gray_rgb, merge_ab

    h, w = colorizer_side(model)
    small = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
    x = np.ascontiguousarray(gray_rgb(small).transpose(2, 0, 1)[None], dtype=np.float32)
    ab = model.session.run(x)[0].transpose(1, 2, 0)
    return merge_ab(rgb, ab)


#: The stages in the order they run.
PIPELINE: tuple[Stage, ...] = (Assess(), FaceDetect(), Defects(), Restore(), Faces(), Tone(), Cast(),
                               SuperResolution(), Colorize())


def _finish(ctx: Context) -> Photo:
    """The result at ``options.scale`` x the input's size in the photo's own samples (float32 in [0, 1]
    for a photo read as float), with the input's alpha resized to it."""
    h, w = ctx.input_size
    target = (h * ctx.options.scale, w * ctx.options.scale)
    rgb = ctx.rgb
    if rgb.shape[:2] != target:
        rgb = cv2.resize(rgb, (target[1], target[0]), interpolation=cv2.INTER_AREA if ctx.scale > ctx.options.scale
                         else cv2.INTER_CUBIC)
    alpha = ctx.photo.alpha
    if alpha is not None and alpha.shape != target:
        alpha = cv2.resize(alpha, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    rgb = as_samples(rgb, ctx.samples)  # the pipeline's own array: clipped in place, not copied
    if rgb is ctx.photo.rgb:
        rgb = rgb.copy()
    if rgb.dtype.kind == "f":
        np.clip(rgb, 0, 1, out=rgb)
    return Photo(rgb=rgb, alpha=alpha, bit_depth=ctx.photo.bit_depth,
                 was_gray=ctx.photo.was_gray, metadata=ctx.photo.metadata)


def restore_photo(photo: Photo, restorer: Model | None, detector: Model | None,
                  options: RestoreOptions | None = None, on_stage=None,
                  face_detector: Model | None = None, references: dict | None = None,
                  upscaler: Model | None = None, face_restorer: Model | None = None,
                  colorizer: Model | None = None, inpainter: Model | None = None) -> RestoreResult:
    """Run the pipeline on one photo; returns the restored photo and the JSON-ready log.

    ``on_stage(name)`` is called as each stage starts. ``references`` ({"defects": Model,
    "restore": Model, "face-detect": Model, "sr": Model}) runs those stages a second time with the
    full-precision reference on the same stage input and logs the edge stage's fidelity (PSNR
    against the reference; mask IoU; matched faces, box IoU and landmark error for the face
    detector) and both latencies."""
    opts = options or RestoreOptions()
    check_scale(opts, restorer, upscaler)
    clock = {"seconds": 0.0}  # model time of the edge models (references excluded), read around each stage

    def timed(model: Model | None) -> Model | None:
        return None if model is None else dataclasses.replace(model, session=TimedSession(model.session, clock))

    models = PipelineModels(restorer=timed(restorer), detector=timed(detector), face_detector=timed(face_detector),
                            upscaler=timed(upscaler), face_restorer=timed(face_restorer), colorizer=timed(colorizer),
                            inpainter=timed(inpainter), references=references or {})
    # integer samples as they are (each stage declares what it needs); float as the pipeline's own copy
    ctx = Context(photo, opts, photo.rgb if photo.rgb.dtype.kind == "u" else photo.rgb.astype(np.float32), models)
    say = on_stage or (lambda name: None)
    stages: list[dict] = []
    for stage in PIPELINE:
        t0, m0 = time.perf_counter(), clock["seconds"]
        if stage.applies(ctx):
            say(stage.name)
            if stage.needs != "any":
                ctx.rgb = as_samples(ctx.rgb, stage.needs)
            info = stage.run(ctx)
            stages.append({"stage": stage.name, "ran": True, "seconds": round(time.perf_counter() - t0, 3),
                           "model_seconds": round(clock["seconds"] - m0, 3), **info})
        else:
            why = stage.reason(ctx)
            if why is not None:
                stages.append({"stage": stage.name, "ran": False, "seconds": round(time.perf_counter() - t0, 3),
                               "reason": why})
    h, w = ctx.input_size
    return RestoreResult(photo=_finish(ctx), log={"input_size": [h, w], "output_size": [h * opts.scale, w * opts.scale],
                                                  "stages": stages})


def side_by_side(before: np.ndarray, after: np.ndarray, gap: int = 8) -> np.ndarray:
    """The original (resized to the result's size) and the result next to each other."""
    h, w = after.shape[:2]
    before, after = as_samples(before, np.float32), as_samples(after, np.float32)
    b = cv2.resize(before, (w, h), interpolation=cv2.INTER_CUBIC) if before.shape[:2] != (h, w) else before
    return np.concatenate([np.clip(b, 0, 1), np.ones((h, gap, 3), np.float32), after], axis=1)
