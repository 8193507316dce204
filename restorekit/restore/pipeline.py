"""The old-photo restoration pipeline, on edge bundles (or their PyTorch references).

Stages, in order, each optional and logged (what ran, on what, with which settings, how long,
what it found):

1. ``assess``   damage assessment (``runtime.assess``): drives the ``auto`` choices below;
2. ``defects``  scratch/dust/tear mask from a detector session, filled by OpenCV inpainting;
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
8. ``colorize`` needs a colorization model: none ships with this version, so asking for it logs
                the stage as skipped with the reason (never silently).

The output keeps the input's alpha (resized with it) and is at ``scale`` x the input (1 = same
size, a larger result is reduced with area averaging; up to the upscaler's or restorer's scale).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import cv2
import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.restore.assess import assess, lab, neutral_cast
from restorekit.restore.defects import detect_defects, inpaint
from restorekit.core.image import Photo
from restorekit.runtime.session import Session
from restorekit.runtime.tiling import run_tiled

STAGES = ("defects", "restore", "faces", "tone", "cast", "sr")
MAX_SCALE = 8
FADED_RANGE, FLAT_CONTRAST, MAX_TONE_GAIN = 85.0, 18.0, 1.6
CAST_LIMIT = 6.0


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
    photo: Photo
    log: dict = field(default_factory=dict)


def _stage(log: list, name: str, t0: float, ran: bool, **info) -> None:
    log.append({"stage": name, "ran": ran, "seconds": round(time.perf_counter() - t0, 3), **info})


def stretch_tone(rgb: np.ndarray) -> tuple[np.ndarray, dict]:
    """Stretch L* so its 0.5-99.5th percentiles span 2-98 (gain capped), keeping a*b*."""
    L = lab(rgb)
    lo, hi = np.percentile(L[:, :, 0], [0.5, 99.5])
    gain = min((98.0 - 2.0) / max(hi - lo, 1e-3), MAX_TONE_GAIN)
    L[:, :, 0] = np.clip((L[:, :, 0] - lo) * gain + 2.0, 0, 100)
    out = np.clip(cv2.cvtColor(L, cv2.COLOR_Lab2RGB), 0, 1)
    return out, {"L_low": round(float(lo), 2), "L_high": round(float(hi), 2), "gain": round(float(gain), 3)}


def remove_cast(rgb: np.ndarray, strength: float = 0.7, max_shift: float = 10.0) -> tuple[np.ndarray, dict]:
    """Shift a*b* so the likely-neutral mid-tones (``neutral_cast``) move ``strength`` of the way
    to neutral, by at most ``max_shift`` a*b* units (a scene that really is one colour is not
    pushed to its complement)."""
    L = lab(rgb)
    ca, cb = neutral_cast(L)
    da, db = -strength * ca, -strength * cb
    norm = float(np.hypot(da, db))
    if norm > max_shift:
        da, db = da * max_shift / norm, db * max_shift / norm
    L[:, :, 1] += da
    L[:, :, 2] += db
    return np.clip(cv2.cvtColor(L, cv2.COLOR_Lab2RGB), 0, 1), {"shift_a": round(da, 2), "shift_b": round(db, 2)}


def _compare(edge_out: np.ndarray, edge_s: float, ref: Model, run_ref) -> dict:
    """Run the reference on the same stage input and score the edge stage against it."""
    from restorekit.core.metrics import psnr

    t0 = time.perf_counter()
    ref_out = run_ref()
    return {"backend": ref.name, "psnr_db": round(psnr(np.clip(edge_out, 0, 1), np.clip(ref_out, 0, 1)), 2),
            "edge_seconds": round(edge_s, 3), "reference_seconds": round(time.perf_counter() - t0, 3),
            "_output": ref_out}


def check_scale(options: RestoreOptions, restorer: Model | None, upscaler: Model | None) -> None:
    """``options.scale`` must be reachable by a model of the pipeline (or be 1 or 2, which the
    built-in 2x restorer, or at worst bicubic, reaches): no silent 8x bicubic."""
    top = max(2, upscaler.scale if upscaler is not None and "sr" in options.stages else 1,
              restorer.scale if restorer is not None and "restore" in options.stages else 1)
    if options.scale > top:
        raise BadInputError(f"--scale {options.scale} needs an upscaler of at least that scale (--sr MODEL); "
                            f"the models given reach {top}x")


def restore_photo(photo: Photo, restorer: Model | None, detector: Model | None,
                  options: RestoreOptions | None = None, on_stage=None,
                  face_detector: Model | None = None, references: dict | None = None,
                  upscaler: Model | None = None, face_restorer: Model | None = None) -> RestoreResult:
    """Run the pipeline on one photo; returns the restored photo and the JSON-ready log.

    ``references`` ({"defects": Model, "restore": Model, "face-detect": Model}) runs those stages
    a second time with the full-precision reference on the same stage input and logs the edge
    stage's fidelity (PSNR against the reference; mask IoU; matched faces, box IoU and landmark
    error for the face detector) and both latencies."""
    references = references or {}
    opts = options or RestoreOptions()
    check_scale(opts, restorer, upscaler)
    use_sr = upscaler is not None and "sr" in opts.stages
    say = on_stage or (lambda name: None)
    stages: list[dict] = []
    rgb = photo.rgb.astype(np.float32)
    h, w = rgb.shape[:2]

    t0 = time.perf_counter()
    say("assess")
    found = assess(rgb)
    _stage(stages, "assess", t0, True, found=found.to_dict())

    faces_found = None  # face detections on the input, shared by the defects guard and the faces stage
    t0 = time.perf_counter()
    if "faces" in opts.stages and face_detector is not None:
        from restorekit.restore.faces import FaceOptions
        from restorekit.runtime.detect import detect_faces

        say("face-detect")
        vs_ref = None
        if "face-detect" in references:
            from restorekit.eval.detection import SCORE_MARGIN, SameInput, agreement

            # detected once per side, down to the comparison's margin; the pipeline keeps the
            # faces at its own threshold (the same faces a detection at that threshold gives)
            threshold = FaceOptions().threshold
            low = detect_faces(face_detector.session, rgb, threshold - SCORE_MARGIN)
            edge_s = time.perf_counter() - t0
            ref = references["face-detect"]
            t1 = time.perf_counter()
            ref_low = detect_faces(SameInput(ref.session, face_detector.session.fixed_size), rgb, threshold - SCORE_MARGIN)
            ref_s = time.perf_counter() - t1
            faces_found = [f for f in low if f.score >= threshold]
            vs_ref = {"backend": ref.name, **agreement(ref_low, low, threshold).to_dict(),
                      "edge_seconds": round(edge_s, 3), "reference_seconds": round(ref_s, 3)}
        else:
            faces_found = detect_faces(face_detector.session, rgb)
        _stage(stages, "face-detect", t0, True, backend=face_detector.name,
               found={"count": len(faces_found), "eye_distances_px": [round(f.eye_distance, 1) for f in faces_found]},
               **({"vs_reference": vs_ref} if vs_ref else {}))
    t0 = time.perf_counter()
    if "defects" in opts.stages and detector is not None:
        say("defects")
        prob = detect_defects(detector.session, rgb, tile=detector.tile or 512, overlap=detector.overlap)
        mask = prob >= opts.defect_threshold
        vs_ref = None
        if "defects" in references:
            ref = references["defects"]
            vs_ref = _compare(prob, time.perf_counter() - t0, ref, lambda: detect_defects(
                ref.session, rgb, tile=ref.tile or 512, overlap=ref.overlap))
            ref_mask = vs_ref.pop("_output") >= opts.defect_threshold
            vs_ref["mask_iou"] = round(float((mask & ref_mask).sum() / max((mask | ref_mask).sum(), 1)), 4)
        guarded = None
        if faces_found is not None:
            from restorekit.restore.faces import feature_guard

            guard = feature_guard(mask.shape, faces_found)
            guarded = {"faces": len(faces_found), "pixels_kept": int((mask & guard).sum())}
            mask &= ~guard
        hole = cv2.dilate(mask.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        rgb = inpaint(rgb, hole)
        found.defects = float(mask.mean())
        _stage(stages, "defects", t0, True, backend=detector.name, settings={"threshold": opts.defect_threshold,
               "inpaint": "OpenCV Telea, radius 3, mask grown 1 px"},
               found={"coverage": round(found.defects, 5), "pixels": int(mask.sum()),
                      "face_features_protected": guarded}, **({"vs_reference": vs_ref} if vs_ref else {}))
    else:
        _stage(stages, "defects", t0, False, reason="not requested" if "defects" not in opts.stages
               else "no scratch detector")

    t0 = time.perf_counter()
    scale_now = 1
    if "restore" in opts.stages and restorer is not None:
        say("restore")
        run = lambda m: np.clip(run_tiled(m.session, stage_in, m.scale, tile=m.tile, overlap=m.overlap,  # noqa: E731
                                          multiple_of=m.multiple_of), 0, 1)
        stage_in = rgb
        rgb = run(restorer)
        scale_now = restorer.scale
        vs_ref = None
        if "restore" in references:
            vs_ref = _compare(rgb, time.perf_counter() - t0, references["restore"], lambda: run(references["restore"]))
            vs_ref.pop("_output")
        if use_sr and scale_now > 1:  # the sr stage does the upscaling: restore at the input's size
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA)
            scale_now = 1
        _stage(stages, "restore", t0, True, backend=restorer.name,
               settings={"tile": restorer.tile, "overlap": restorer.overlap, "scale": restorer.scale,
                         "output": f"{scale_now}x"}, **({"vs_reference": vs_ref} if vs_ref else {}))
    else:
        _stage(stages, "restore", t0, False, reason="not requested" if "restore" not in opts.stages
               else "no restoration model")

    t0 = time.perf_counter()
    fixer = face_restorer or restorer
    if "faces" in opts.stages and face_detector is not None and fixer is not None:
        from restorekit.restore.faces import FaceOptions, enhance_faces, scaled

        say("faces")
        known = scaled(faces_found, rgb.shape[0] / h)
        rgb, faces = enhance_faces(rgb, face_detector.session, fixer.session,
                                   FaceOptions(strength=opts.face_strength), fixer.scale, fixer.tile, faces=known)
        _stage(stages, "faces", t0, True, backend=f"{face_detector.name}; faces restored by {fixer.name}"
               + ("" if face_restorer else " (the restoration model: no --face-model given)"),
               settings={"strength": opts.face_strength, "aligned_size": 512, "min_eye_distance_px": 32},
               found={"count": len(faces), "enhanced": sum(f["enhanced"] for f in faces), "faces": faces})
    else:
        _stage(stages, "faces", t0, False, reason="not requested" if "faces" not in opts.stages else
               "no face detector (pass --face-detector)" if face_detector is None else "no restoration model")

    t0 = time.perf_counter()
    faded = found.tonal_range < FADED_RANGE or found.contrast < FLAT_CONTRAST
    if "tone" in opts.stages and faded:
        say("tone")
        rgb, info = stretch_tone(rgb)
        _stage(stages, "tone", t0, True, settings=info,
               found={"tonal_range": round(found.tonal_range, 2), "contrast": round(found.contrast, 2)})
    else:
        _stage(stages, "tone", t0, False, reason="not requested" if "tone" not in opts.stages else
               f"not faded (tonal range {found.tonal_range:.1f} >= {FADED_RANGE:g}, contrast {found.contrast:.1f})")

    t0 = time.perf_counter()
    if "cast" in opts.stages and found.tone == "colour" and found.cast > CAST_LIMIT:
        say("cast")
        rgb, info = remove_cast(rgb)
        _stage(stages, "cast", t0, True, settings=info, found={"cast": round(found.cast, 2)})
    else:
        why = ("not requested" if "cast" not in opts.stages else
               f"{found.tone} print keeps its tone" if found.tone != "colour" else
               f"cast {found.cast:.1f} <= {CAST_LIMIT:g}")
        _stage(stages, "cast", t0, False, reason=why)

    t0 = time.perf_counter()
    if use_sr:
        say("sr")
        sr_in = rgb
        run_sr = lambda m: np.clip(run_tiled(m.session, sr_in, m.scale, tile=m.tile, overlap=m.overlap,  # noqa: E731
                                             multiple_of=m.multiple_of), 0, 1)
        rgb = run_sr(upscaler)
        scale_now *= upscaler.scale
        vs_ref = None
        if "sr" in references:
            vs_ref = _compare(rgb, time.perf_counter() - t0, references["sr"], lambda: run_sr(references["sr"]))
            vs_ref.pop("_output")
        _stage(stages, "sr", t0, True, backend=upscaler.name,
               settings={"tile": upscaler.tile, "overlap": upscaler.overlap, "scale": upscaler.scale},
               **({"vs_reference": vs_ref} if vs_ref else {}))
    else:
        _stage(stages, "sr", t0, False, reason="not requested" if "sr" not in opts.stages else
               "no upscaler (pass --sr MODEL)" + (f"; {scale_now}x from the restoration model" if scale_now > 1 else ""))

    t0 = time.perf_counter()
    if opts.colorize or found.tone == "bw":
        _stage(stages, "colorize", t0, False, reason="no colorization model available in this version"
               + ("" if opts.colorize else " (the photo is black-and-white)"))

    target = (h * opts.scale, w * opts.scale)
    if rgb.shape[:2] != target:
        rgb = cv2.resize(rgb, (target[1], target[0]), interpolation=cv2.INTER_AREA if scale_now > opts.scale
                         else cv2.INTER_CUBIC)
    alpha = photo.alpha
    if alpha is not None and alpha.shape != target:
        alpha = cv2.resize(alpha, (target[1], target[0]), interpolation=cv2.INTER_LINEAR)
    out = Photo(rgb=np.clip(rgb, 0, 1).astype(np.float32), alpha=alpha, bit_depth=photo.bit_depth,
                was_gray=photo.was_gray)
    return RestoreResult(photo=out, log={"input_size": [h, w], "output_size": list(target), "stages": stages})


def side_by_side(before: np.ndarray, after: np.ndarray, gap: int = 8) -> np.ndarray:
    """The original (resized to the result's size) and the result next to each other."""
    h, w = after.shape[:2]
    b = cv2.resize(before, (w, h), interpolation=cv2.INTER_CUBIC) if before.shape[:2] != (h, w) else before
    return np.concatenate([np.clip(b, 0, 1), np.ones((h, gap, 3), np.float32), after], axis=1)
