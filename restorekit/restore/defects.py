"""Scratch/dust/tear masks from a detector session, and inpainting of the masked pixels.

Torch-free: the detector is any Session whose output is a 1-channel probability map at the
input's size (the ScratchUNet student through PyTorch, or a converted bundle of it).
"""

from __future__ import annotations

import cv2
import numpy as np

from restorekit.runtime.session import Session
from restorekit.runtime.tiling import run_tiled


def detect_defects(session: Session, rgb: np.ndarray, tile: int = 512, overlap: int = 32) -> np.ndarray:
    """HxW float32 probability that each pixel is a scratch, hair, dust speck or tear.

    Large photos run in overlapping, feathered tiles (sizes rounded to the net's multiple of 4)."""
    prob = run_tiled(session, rgb, scale=1, tile=tile, overlap=overlap, multiple_of=4)
    return np.clip(prob[:, :, 0], 0.0, 1.0)


def inpaint(rgb: np.ndarray, mask: np.ndarray, radius: int = 3, method: str = "telea") -> np.ndarray:
    """Fill the ``mask`` pixels from their surroundings (OpenCV Telea or Navier-Stokes); the
    rest of the image is returned unchanged, at full float precision."""
    if not mask.any():
        return rgb
    flag = {"telea": cv2.INPAINT_TELEA, "ns": cv2.INPAINT_NS}[method]
    src = np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)
    filled = cv2.inpaint(np.ascontiguousarray(src[:, :, ::-1]), mask.astype(np.uint8), radius, flag)[:, :, ::-1]
    out = rgb.copy()
    out[mask] = filled[mask].astype(np.float32) / 255.0
    return out
