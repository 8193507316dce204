"""Faces in the old-photo pipeline: 5-point alignment to the FFHQ template, restoration, and a
feathered paste-back. Torch-free: the detector and the face restorer are Sessions."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from restorekit.runtime.detect import Face, detect_faces
from restorekit.runtime.session import Session
from restorekit.runtime.tiling import run_tiled

#: Eyes, nose tip, mouth corners of the FFHQ alignment at 512x512 (the face models' input).
FFHQ_512 = np.array([[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
                    np.float32)


def alignment(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """2x3 similarity transform (rotation, uniform scale, shift) taking the 5 landmarks to the
    FFHQ template at ``size`` px (least squares)."""
    template = FFHQ_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("cannot fit a similarity transform to these landmarks")
    return matrix


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine ``matrix`` to an (N, 2) array of points."""
    return points @ matrix[:, :2].T + matrix[:, 2]


def paste_back(image: np.ndarray, face: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Warp an aligned face back into ``image`` with a feathered mask; the feather (erosion and
    blur) scales with the face's size in the image."""
    h, w = image.shape[:2]
    inverse = cv2.invertAffineTransform(matrix)
    back = cv2.warpAffine(face, inverse, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    size = face.shape[0]
    mask = cv2.warpAffine(np.ones((size, size), np.float32), inverse, (w, h), flags=cv2.INTER_LINEAR)
    side = size / float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))  # the face square's side in the image
    erode = max(1, int(side * 0.04))
    mask = cv2.erode(mask, np.ones((2 * erode + 1,) * 2, np.uint8))
    blur = max(1.0, side * 0.03)
    mask = np.clip(cv2.GaussianBlur(mask, (0, 0), blur), 0, 1)[:, :, None]
    return image * (1 - mask) + back * mask


@dataclass
class FaceOptions:
    """How faces are restored and blended back."""

    strength: float = 0.7  # blend of the restored face with the input face
    min_eye_distance: float = 32.0  # px across the eyes; smaller faces are reported, not changed
    threshold: float = 0.8
    size: int = 512


def scaled(faces: list[Face], k: float) -> list[Face]:
    """The same faces in an image ``k`` times larger."""
    return [Face(box=f.box * k, score=f.score, landmarks=f.landmarks * k) for f in faces]


def enhance_faces(image: np.ndarray, detector: Session | None, restorer, options: FaceOptions | None = None,
                  restorer_scale: int = 1, restorer_tile: int | None = None,
                  faces: list[Face] | None = None) -> tuple[np.ndarray, list[dict]]:
    """Detect (unless ``faces`` are given), align, restore, blend and paste back every face
    large enough; returns the image and one log entry per face (box, score, eye distance, what
    was done)."""
    opts = options or FaceOptions()
    if faces is None:
        faces = detect_faces(detector, image, threshold=opts.threshold)
    out = image.copy()
    log = []
    for k, f in enumerate(faces):
        entry = {"face": k, "box": [round(float(v), 1) for v in f.box], "score": round(f.score, 3),
                 "eye_distance_px": round(f.eye_distance, 1)}
        if f.eye_distance < opts.min_eye_distance:
            log.append({**entry, "enhanced": False, "reason": f"eyes {f.eye_distance:.0f} px apart < "
                                                             f"{opts.min_eye_distance:g}: left alone"})
            continue
        matrix = alignment(f.landmarks, opts.size)
        aligned = cv2.warpAffine(out, matrix, (opts.size, opts.size), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_REFLECT)
        low = aligned
        if restorer_scale > 1:  # a 2x restorer sees the face at half size and returns it at full size
            low = cv2.resize(aligned, (opts.size // restorer_scale,) * 2, interpolation=cv2.INTER_AREA)
        restored = np.clip(run_tiled(restorer, low, restorer_scale, tile=restorer_tile), 0, 1)
        blended = opts.strength * restored + (1 - opts.strength) * aligned
        out = paste_back(out, blended, matrix)
        round_trip = float(np.abs(warp_points(warp_points(f.landmarks, matrix),
                                              cv2.invertAffineTransform(matrix)) - f.landmarks).max())
        fit = float(np.linalg.norm(warp_points(f.landmarks, matrix) - FFHQ_512 * (opts.size / 512), axis=1).mean())
        log.append({**entry, "enhanced": True, "strength": opts.strength,
                    "alignment_residual_px": round(fit, 2), "round_trip_error_px": round(round_trip, 4)})
    return np.clip(out, 0, 1), log


def feature_guard(shape: tuple[int, int], faces: list[Face]) -> np.ndarray:
    """Boolean mask of the eyes-nose-mouth area of each face (an ellipse around its landmarks):
    thin dark facial features look like scratches to a defect detector and must not be inpainted."""
    guard = np.zeros(shape, np.uint8)
    for f in faces:
        centre = f.landmarks.mean(axis=0)
        span = max(f.eye_distance, 1.0)
        cv2.ellipse(guard, (int(round(centre[0])), int(round(centre[1]))),
                    (int(round(1.2 * span)), int(round(1.5 * span))), 0, 0, 360, 1, -1)
    return guard.astype(bool)
