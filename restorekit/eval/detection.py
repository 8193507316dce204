"""Fidelity of a face-detector bundle against its reference: raw outputs and decoded faces.

A detector's output is not an image, so PSNR says nothing useful about it. What matters is
(1) the raw per-prior values (box and landmark offsets, logits), compared element-wise, and
(2) the faces a user gets after decoding and suppression: the same faces, at the same places,
with the same landmarks. Torch-free (the reference is any Session).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from restorekit.runtime.session import Session

MATCH_IOU = 0.5  # a bundle face matches a reference face when their boxes overlap at least this much
#: A face scored just above the threshold by one detector and just below by the other is the
#: same face, not a miss: confident faces (>= threshold) are looked for among the other side's
#: faces down to ``threshold - SCORE_MARGIN``.
SCORE_MARGIN = 0.05


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


@dataclass
class FaceAgreement:
    """How the faces found by a detector compare with those of its reference on one photo."""

    faces_reference: int
    faces_bundle: int
    matched: int
    mean_box_iou: float | None  # over matched faces
    max_landmark_err_px: float | None
    max_score_diff: float | None
    extra: int | None = None  # confident bundle faces the reference does not have (None: unmatched count)

    @property
    def agree(self) -> bool:
        """Every reference face found, and no extra face."""
        extra = self.faces_bundle - self.matched if self.extra is None else self.extra
        return self.matched == self.faces_reference and extra == 0

    def to_dict(self) -> dict:
        """The agreement as JSON-ready numbers."""
        r = lambda v, n: None if v is None else round(float(v), n)  # noqa: E731
        return {"faces_reference": self.faces_reference, "faces_bundle": self.faces_bundle, "matched": self.matched,
                "extra": self.faces_bundle - self.matched if self.extra is None else self.extra,
                "mean_box_iou": r(self.mean_box_iou, 4), "max_landmark_err_px": r(self.max_landmark_err_px, 3),
                "max_score_diff": r(self.max_score_diff, 4), "agree": self.agree}


def faces_agreement(reference: Session, session: Session, rgb: np.ndarray, threshold: float = 0.8,
                    margin: float = SCORE_MARGIN) -> FaceAgreement:
    """Detect faces on ``rgb`` with both detectors (the face pipeline's own detection) and
    compare them: each side's faces at ``threshold`` must be found by the other at
    ``threshold - margin``. The reference sees the photo fitted exactly as the session does."""
    from restorekit.runtime.detect import detect_faces

    low = threshold - margin
    ref = detect_faces(SameInput(reference, session.fixed_size), rgb, low)
    return agreement(ref, detect_faces(session, rgb, low), threshold)


def agreement(ref: list, got: list, threshold: float = 0.8) -> FaceAgreement:
    """Compare two detectors' faces, both detected down to ``threshold - SCORE_MARGIN``: each
    side's faces at ``threshold`` must be among the other side's faces."""
    sure_ref = [f for f in ref if f.score >= threshold]
    sure_got = [f for f in got if f.score >= threshold]
    found = match_faces(sure_ref, got)  # every confident reference face, among the bundle's
    extra = len(sure_got) - match_faces(sure_got, ref).matched  # confident bundle faces the reference lacks
    return FaceAgreement(len(sure_ref), len(sure_got), found.matched, found.mean_box_iou,
                         found.max_landmark_err_px, found.max_score_diff, extra)


def match_faces(reference: list, found: list) -> FaceAgreement:
    """Greedy one-to-one matching of ``found`` faces to ``reference`` faces by box IoU."""
    pairs = sorted(((box_iou(r.box, f.box), i, j) for i, r in enumerate(reference) for j, f in enumerate(found)),
                   reverse=True)
    used_r, used_f, matched = set(), set(), []
    for iou, i, j in pairs:
        if iou < MATCH_IOU or i in used_r or j in used_f:
            continue
        used_r.add(i)
        used_f.add(j)
        matched.append((iou, reference[i], found[j]))
    if not matched:
        return FaceAgreement(len(reference), len(found), 0, None, None, None)
    return FaceAgreement(
        len(reference), len(found), len(matched),
        mean_box_iou=float(np.mean([m[0] for m in matched])),
        max_landmark_err_px=float(max(np.linalg.norm(r.landmarks - f.landmarks, axis=1).max() for _, r, f in matched)),
        max_score_diff=float(max(abs(r.score - f.score) for _, r, f in matched)),
    )


class SameInput:
    """A reference Session seen through another session's fixed input size, so that the face
    pipeline fits and pads the photo identically for both and they are compared on one input."""

    def __init__(self, reference: Session, fixed_size: tuple[int, int] | None):
        self.reference, self.fixed_size = reference, fixed_size
        self.backend, self.device = reference.backend, reference.device

    def run(self, x: np.ndarray) -> np.ndarray:
        """Return the output computed for this input (the same input must come again)."""
        return self.reference.run(x)


def compare_detector(session: Session, reference: Session, images: list[tuple[str, np.ndarray]],
                     threshold: float = 0.8) -> dict:
    """Run both detectors on every photo (HxWx3 float RGB) through the face pipeline's own
    detection (two scales, NMS); score the raw outputs at the first scale and the decoded faces
    (:func:`faces_agreement`).

    Returns per-image rows and a summary with ``max_abs_err`` (raw values), ``nonfinite``,
    face counts, ``mean_box_iou``, ``max_landmark_err_px`` and ``detections_agree``.
    """
    from restorekit.runtime.detect import MAX_DETECT_SIDE, detector_input

    rows = []
    for name, rgb in images:
        x, _ = detector_input(session, rgb, min(1.0, MAX_DETECT_SIDE / max(rgb.shape[:2])))
        raw_b, raw_r = session.run(x), reference.run(x)
        nonfinite = int((~np.isfinite(raw_b)).sum())
        err = float(np.abs(np.nan_to_num(raw_b) - raw_r).max())
        agreement = faces_agreement(reference, session, rgb, threshold)
        rows.append({"image": name, "max_abs_err": round(err, 6), "nonfinite": nonfinite, **agreement.to_dict()})
    ious = [r["mean_box_iou"] for r in rows if r["mean_box_iou"] is not None]
    lm = [r["max_landmark_err_px"] for r in rows if r["max_landmark_err_px"] is not None]
    return {
        "per_image": rows,
        "max_abs_err": max(r["max_abs_err"] for r in rows),
        "nonfinite": sum(r["nonfinite"] for r in rows),
        "faces_reference": sum(r["faces_reference"] for r in rows),
        "faces_bundle": sum(r["faces_bundle"] for r in rows),
        "faces_matched": sum(r["matched"] for r in rows),
        "mean_box_iou": round(float(np.mean(ious)), 4) if ious else None,
        "max_landmark_err_px": round(float(max(lm)), 3) if lm else None,
        "detections_agree": all(r["agree"] for r in rows),
    }

