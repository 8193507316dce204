#!/usr/bin/env python
"""Draw docs/faces_examples.png: `restorekit restore --face-detector` on real group photos from
../shared/photos/whole (not redistributed; only this small figure is): detected faces (boxes and
5 landmarks) on the original | the restored result.

    .venv/bin/python scripts/make_faces_figure.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from restorekit.models.builtin import SCRATCH_WEIGHTS, load_builtin, load_student_safetensors  # noqa: E402
from restorekit.models.reference import TorchSession  # noqa: E402
from restorekit.models.retinaface import load_retinaface  # noqa: E402
from restorekit.runtime.detect import detect_faces  # noqa: E402
from restorekit.core.image import read_image  # noqa: E402
from restorekit.restore.pipeline import Model, restore_photo  # noqa: E402

PHOTOS = ("cf_00.jpg", "cf_02.png", "cf_03.jpg")


def main() -> int:
    shared = ROOT.parent / "shared"
    weights = shared / "weights" / "retinaface_mobilenet0.25.pth"
    if not weights.is_file():
        print(f"needs {weights}")
        return 1
    faces_model = Model(TorchSession(load_retinaface(weights)), "RetinaFace")
    restorer = Model(TorchSession(load_builtin()), "restorekit-x2", scale=2, tile=256)
    detector = Model(TorchSession(load_student_safetensors(SCRATCH_WEIGHTS)), "ScratchUNet", tile=512, multiple_of=4)
    rows = []
    for name in PHOTOS:
        photo = read_image(shared / "photos" / "whole" / name)
        marked = np.ascontiguousarray(photo.rgb.copy())
        faces = detect_faces(faces_model.session, photo.rgb)
        for f in faces:
            x0, y0, x1, y1 = (int(round(v)) for v in f.box)
            cv2.rectangle(marked, (x0, y0), (x1, y1), (0.1, 1.0, 0.1), 2)
            for x, y in f.landmarks:
                cv2.circle(marked, (int(round(x)), int(round(y))), 2, (1.0, 0.1, 0.1), -1)
        result = restore_photo(photo, restorer, detector, face_detector=faces_model)
        print(f"{name}: {len(faces)} faces")
        row = np.concatenate([marked, np.ones((marked.shape[0], 8, 3), np.float32), result.photo.rgb], axis=1)
        rows.append(cv2.resize(row, (1000, round(row.shape[0] * 1000 / row.shape[1])), interpolation=cv2.INTER_AREA))
    out = ROOT / "docs" / "faces_examples.png"
    cv2.imwrite(str(out), np.clip(np.concatenate(rows, 0)[:, :, ::-1] * 255, 0, 255).astype(np.uint8))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
