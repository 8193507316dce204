"""Faces: RetinaFace decoding (numpy), 5-point alignment to the FFHQ template, enhancement and
feathered paste-back. Torch-free: the detector and the face restorer are Sessions.

The detector is any Session taking RGB in [0, 1] and returning ``[N, priors, 16]`` (4 box
offsets, 2 logits, 10 landmark offsets per prior): RetinaFace-MobileNet0.25 in PyTorch
(``restorekit.models.retinaface``) or its ONNX/TFLite "detect" bundle.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import product

import cv2
import numpy as np

from restorekit.runtime.session import Session
from restorekit.runtime.tiling import run_tiled

# Anchor sizes per pyramid level (px) of the published RetinaFace-MobileNet0.25 weights
# (mobilenet0.25_Final.pth, the "Face-Detector-1MB" configuration). With the ResNet-50 model's
# [[16, 32], [64, 128], [256, 512]] these weights give two offset boxes per face.
MIN_SIZES = ((10, 20), (32, 64), (128, 256))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
#: Eyes, nose tip, mouth corners of the FFHQ alignment at 512x512 (the face models' input).
FFHQ_512 = np.array([[192.98, 239.95], [318.90, 240.19], [256.63, 314.02], [201.26, 371.41], [313.09, 371.15]],
                    np.float32)
MAX_DETECT_SIDE = 1600  # larger photos are detected on a downscaled copy
LARGE_FACE_SIDE = 640  # and every photo also at this size, for large faces


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1), score, 5 landmarks (eyes, nose, mouth corners) in px."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def eye_distance(self) -> float:
        return float(np.linalg.norm(self.landmarks[1] - self.landmarks[0]))


def priors(height: int, width: int) -> np.ndarray:
    """Anchor boxes (cx, cy, w, h) normalised to the image, in the network's output order."""
    out = []
    for sizes, step in zip(MIN_SIZES, STEPS):
        fh, fw = int(np.ceil(height / step)), int(np.ceil(width / step))
        for i, j in product(range(fh), range(fw)):
            for s in sizes:
                out.append(((j + 0.5) * step / width, (i + 0.5) * step / height, s / width, s / height))
    return np.asarray(out, np.float32)


def decode(raw: np.ndarray, height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (x0, y0, x1, y1), landmarks (5, 2) in pixels and face scores from ``[P, 16]``."""
    pri = priors(height, width)
    if len(pri) != len(raw):
        raise ValueError(f"detector output has {len(raw)} priors, expected {len(pri)} for {height}x{width}")
    loc, logits, lm = raw[:, :4], raw[:, 4:6], raw[:, 6:16]
    centre = pri[:, :2] + loc[:, :2] * VARIANCE[0] * pri[:, 2:]
    size = pri[:, 2:] * np.exp(loc[:, 2:] * VARIANCE[1])
    boxes = np.concatenate([centre - size / 2, centre + size / 2], axis=1) * [width, height, width, height]
    lms = (pri[:, None, :2] + lm.reshape(-1, 5, 2) * VARIANCE[0] * pri[:, None, 2:]) * [width, height]
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return boxes, lms, e[:, 1] / e.sum(axis=1)


def detector_input(session: Session, rgb: np.ndarray, k: float) -> tuple[np.ndarray, float]:
    """The NCHW input for detecting faces on ``rgb`` resized by ``k`` (<= 1), and the factor
    actually used. A detector with a fixed input size gets the resized photo fitted inside it
    and padded at the bottom and right (padding moves no coordinates)."""
    h, w = rgb.shape[:2]
    fixed = session.fixed_size
    if fixed is not None:
        k = min(k, fixed[0] / h, fixed[1] / w)
    img = cv2.resize(rgb, (max(1, round(w * k)), max(1, round(h * k))), interpolation=cv2.INTER_AREA) if k < 1 else rgb
    if fixed is not None and img.shape[:2] != tuple(fixed):
        img = cv2.copyMakeBorder(img, 0, fixed[0] - img.shape[0], 0, fixed[1] - img.shape[1], cv2.BORDER_CONSTANT)
    return np.ascontiguousarray(img.transpose(2, 0, 1)[None], dtype=np.float32), k


def _detect_at(session: Session, rgb: np.ndarray, k: float, threshold: float):
    """Detections on ``rgb`` resized by ``k``, mapped back to ``rgb``'s pixels."""
    x, k = detector_input(session, rgb, k)
    boxes, lms, scores = decode(session.run(x)[0], x.shape[2], x.shape[3])
    keep = scores >= threshold
    return boxes[keep] / k, lms[keep] / k, scores[keep]


def detect_faces(session: Session, rgb: np.ndarray, threshold: float = 0.8, nms_iou: float = 0.4) -> list[Face]:
    """Faces in an RGB float image, highest score first, overlapping duplicates suppressed.

    Two scales: the photo itself (at most ``MAX_DETECT_SIDE`` px) for small faces, and a copy of
    at most ``LARGE_FACE_SIDE`` px for large ones (this detector's anchors stop at 256 px, and it
    misses faces much larger than that); detections of both are merged by NMS.
    """
    h, w = rgb.shape[:2]
    scales = sorted({min(1.0, MAX_DETECT_SIDE / max(h, w)), min(1.0, LARGE_FACE_SIDE / max(h, w))}, reverse=True)
    found = [_detect_at(session, rgb, k, threshold) for k in scales]
    boxes = np.concatenate([f[0] for f in found])
    lms = np.concatenate([f[1] for f in found])
    scores = np.concatenate([f[2] for f in found])
    if len(scores) == 0:
        return []
    xywh = [[float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])] for b in boxes]
    picked = np.asarray(cv2.dnn.NMSBoxes(xywh, scores.tolist(), threshold, nms_iou)).reshape(-1)
    kept: list[int] = []
    for i in sorted((int(i) for i in picked), key=lambda i: -scores[i]):
        # boxes of different scales can nest (IoU below the NMS limit): drop a box mostly inside a kept one
        if all(_inside_fraction(boxes[i], boxes[j]) < 0.6 and _inside_fraction(boxes[j], boxes[i]) < 0.6 for j in kept):
            kept.append(i)
    return [Face(box=boxes[i], score=float(scores[i]), landmarks=lms[i]) for i in kept]


def _inside_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """How much of box ``a`` lies inside box ``b``."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-6)
    return float(w * h / area)


def alignment(landmarks: np.ndarray, size: int = 512) -> np.ndarray:
    """2x3 similarity transform (rotation, uniform scale, shift) taking the 5 landmarks to the
    FFHQ template at ``size`` px (least squares)."""
    template = FFHQ_512 * (size / 512.0)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks.astype(np.float32), template, method=cv2.LMEDS)
    if matrix is None:
        raise ValueError("cannot fit a similarity transform to these landmarks")
    return matrix


def warp_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
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
