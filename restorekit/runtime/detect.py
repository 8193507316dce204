"""Face detection: RetinaFace decoding (numpy) over any detector Session. Torch-free.

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


# Anchor sizes per pyramid level (px) of the published RetinaFace-MobileNet0.25 weights
# (mobilenet0.25_Final.pth, the "Face-Detector-1MB" configuration). With the ResNet-50 model's
# [[16, 32], [64, 128], [256, 512]] these weights give two offset boxes per face.
MIN_SIZES = ((10, 20), (32, 64), (128, 256))
STEPS = (8, 16, 32)
VARIANCE = (0.1, 0.2)
MAX_DETECT_SIDE = 1600  # larger photos are detected on a downscaled copy
LARGE_FACE_SIDE = 640  # and every photo also at this size, for large faces
HUGE_FACE_SIDE = 320  # and at this one, for faces that fill the photo (portraits, aligned crops)
#: Face sizes (box side, px) at which each found face's landmarks are measured again and averaged.
#: This detector's landmarks are best on faces of about 80-150 px: on the aligned 512 px faces of
#: ../shared/photos/faces (300 px boxes) one pass gives 0.22 of the inter-ocular distance mean error,
#: one pass at a 128 px face 0.085, the mean of these three 0.077 (tests/test_faces.py).
REFINE_FACE_SIDES = (80, 125, 150)
REFINE_CONTEXT = 1.65  # the crop around a face is this many times its box's longer side


@dataclass
class Face:
    """One detected face: box (x0, y0, x1, y1), score, 5 landmarks (eyes, nose, mouth corners) in px."""

    box: np.ndarray
    score: float
    landmarks: np.ndarray  # (5, 2)

    @property
    def eye_distance(self) -> float:
        """Distance between the two eye landmarks, in pixels."""
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


def detect_faces(session: Session, rgb: np.ndarray, threshold: float = 0.8, nms_iou: float = 0.4,
                 refine: bool = True) -> list[Face]:
    """Faces in an RGB float image, highest score first, overlapping duplicates suppressed.

    Three scales: the photo itself (at most ``MAX_DETECT_SIDE`` px) for small faces, and copies
    of at most ``LARGE_FACE_SIDE`` and ``HUGE_FACE_SIDE`` px for large ones (this detector's
    anchors stop at 256 px, and it misses faces much larger than that); detections of all three
    are merged by NMS. With ``refine``
    each face's landmarks are then measured again on a crop around it at the face sizes where
    they are most accurate (``REFINE_FACE_SIDES``) and averaged.
    """
    h, w = rgb.shape[:2]
    scales = sorted({min(1.0, side / max(h, w)) for side in (MAX_DETECT_SIDE, LARGE_FACE_SIDE, HUGE_FACE_SIDE)},
                    reverse=True)
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
    faces = [Face(box=boxes[i], score=float(scores[i]), landmarks=lms[i]) for i in kept]
    return [refine_landmarks(session, rgb, f) for f in faces] if refine else faces


def refine_landmarks(session: Session, rgb: np.ndarray, face: Face) -> Face:
    """``face`` with its landmarks re-measured on a crop around it, resized so that the face is
    each of ``REFINE_FACE_SIDES`` px, and averaged (unchanged where no pass finds the face)."""
    x0, y0, x1, y1 = face.box
    box_side = max(x1 - x0, y1 - y0, 1.0)
    crop, origin = _square_crop(rgb, ((x0 + x1) / 2, (y0 + y1) / 2), REFINE_CONTEXT * box_side)
    found = []
    for side in REFINE_FACE_SIDES:
        k = side / box_side
        size = max(8, round(crop.shape[0] * k))
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA if k < 1 else cv2.INTER_LINEAR)
        x, used = detector_input(session, small, 1.0)
        boxes, lms, scores = decode(session.run(x)[0], x.shape[2], x.shape[3])
        centres = (boxes[:, :2] + boxes[:, 2:]) / 2 / used
        near = np.linalg.norm(centres - size / 2, axis=1) < 0.25 * side
        if near.any():
            best = int(np.argmax(np.where(near, scores, -1.0)))
            found.append(lms[best] / used * (crop.shape[0] / size) + origin)
    if not found:
        return face
    return Face(box=face.box, score=face.score, landmarks=np.mean(found, axis=0).astype(np.float32))


def _square_crop(rgb: np.ndarray, centre: tuple[float, float], side: float) -> tuple[np.ndarray, np.ndarray]:
    """A ``side`` px square of ``rgb`` centred on ``centre`` (zero outside the image) and its
    top-left corner in ``rgb``'s pixels."""
    n = max(2, int(round(side)))
    left, top = int(round(centre[0] - n / 2)), int(round(centre[1] - n / 2))
    h, w = rgb.shape[:2]
    out = np.zeros((n, n, rgb.shape[2]), rgb.dtype)
    sx0, sy0, sx1, sy1 = max(left, 0), max(top, 0), min(left + n, w), min(top + n, h)
    if sx1 > sx0 and sy1 > sy0:
        out[sy0 - top:sy1 - top, sx0 - left:sx1 - left] = rgb[sy0:sy1, sx0:sx1]
    return out, np.array([left, top], np.float32)


def _inside_fraction(a: np.ndarray, b: np.ndarray) -> float:
    """How much of box ``a`` lies inside box ``b``."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    area = max((a[2] - a[0]) * (a[3] - a[1]), 1e-6)
    return float(w * h / area)
