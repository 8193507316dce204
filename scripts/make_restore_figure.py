#!/usr/bin/env python
"""Draw docs/restore_examples.png: `restorekit restore` (default stages, scale 1) on real old
photos from ../shared/photos (not redistributed; only this small figure is), original | result.

    .venv/bin/python scripts/make_restore_figure.py
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
from restorekit.core.image import read_image  # noqa: E402
from restorekit.restore.pipeline import Model, restore_photo, side_by_side  # noqa: E402

PHOTOS = ("old_scratched/bopb_scratch_b.png", "old/bopb_old_c.png", "bw/ddcolor_February_1936.jpg")


def main() -> int:
    shared = ROOT.parent / "shared" / "photos"
    if not shared.is_dir():
        print(f"needs {shared}")
        return 1
    restorer = Model(TorchSession(load_builtin()), "restorekit-x2", scale=2, tile=256)
    detector = Model(TorchSession(load_student_safetensors(SCRATCH_WEIGHTS)), "ScratchUNet", tile=512, multiple_of=4)
    rows = []
    for name in PHOTOS:
        photo = read_image(shared / name)
        result = restore_photo(photo, restorer, detector)
        ran = [s["stage"] for s in result.log["stages"] if s["ran"]]
        print(f"{name}: {', '.join(ran)}")
        row = side_by_side(photo.rgb, result.photo.rgb)
        rows.append(cv2.resize(row, (1000, round(row.shape[0] * 1000 / row.shape[1])), interpolation=cv2.INTER_AREA))
    out = ROOT / "docs" / "restore_examples.png"
    cv2.imwrite(str(out), np.clip(np.concatenate(rows, 0)[:, :, ::-1] * 255, 0, 255).astype(np.uint8))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
