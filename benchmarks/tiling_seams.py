"""Seams: tiled vs whole-image output of an fp32 ONNX bundle, feathered blending vs hard paste.

    python benchmarks/tiling_seams.py BUNDLE_DIR [--image PATH] [--size 1000x800] [--tile 256]

"hard paste" is Real-ESRGAN's own tiling (tiles extended by ``pad`` on each side, the extension
cropped away, no blending); at equal overlap (2 x pad) it is compared with restorekit's feathered
blending. PSNR is of the tiled output against one whole-image run of the same session.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorekit.core.metrics import psnr  # noqa: E402
from restorekit.runtime import load_bundle  # noqa: E402
from restorekit.core.image import read_image  # noqa: E402
from restorekit.runtime.tiling import run_tiled  # noqa: E402


def hard_paste(session, img: np.ndarray, scale: int, tile: int, pad: int) -> np.ndarray:
    """Real-ESRGAN-style tiling: run each tile with ``pad`` context, keep only its centre."""
    h, w, _ = img.shape
    out = np.zeros((h * scale, w * scale, 3), np.float32)
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ya, xa, yb, xb = max(y0 - pad, 0), max(x0 - pad, 0), min(y1 + pad, h), min(x1 + pad, w)
            o = session.run(np.ascontiguousarray(img[ya:yb, xa:xb].transpose(2, 0, 1)[None]))[0].transpose(1, 2, 0)
            oy, ox = (y0 - ya) * scale, (x0 - xa) * scale
            out[y0 * scale : y1 * scale, x0 * scale : x1 * scale] = o[oy : oy + (y1 - y0) * scale, ox : ox + (x1 - x0) * scale]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle")
    ap.add_argument("--image", default=str(Path(__file__).resolve().parents[1] / "sample_images" / "coffee.png"))
    ap.add_argument("--size", default="1000x800", help="WxH the photo is resized to")
    ap.add_argument("--tile", type=int, default=256, help="tile size (input pixels, overlap included)")
    ap.add_argument("--overlaps", default="16,20,32")
    args = ap.parse_args()
    b = load_bundle(args.bundle)
    if b.session.fixed_size is not None:
        sys.exit("needs a dynamic-shape (ONNX) bundle")
    w, h = (int(v) for v in args.size.split("x"))
    img = np.clip(cv2.resize(read_image(args.image).rgb, (w, h), interpolation=cv2.INTER_AREA), 0, 1)
    sc = b.manifest.scale
    whole = np.clip(b.session.run(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))[0].transpose(1, 2, 0), 0, 1)
    print(f"{b.manifest.name} {b.manifest.target}-{b.manifest.precision}, {w}x{h} -> x{sc}, tile {args.tile}")
    print("| overlap (px) | hard paste, Real-ESRGAN style (dB) | feathered, restorekit (dB) |")
    print("|---|---|---|")
    for ov in (int(v) for v in args.overlaps.split(",")):
        hp = np.clip(hard_paste(b.session, img, sc, args.tile - ov, ov // 2), 0, 1)
        ft = np.clip(run_tiled(b.session, img, sc, tile=args.tile, overlap=ov), 0, 1)
        print(f"| {ov} | {psnr(hp, whole):.1f} | {psnr(ft, whole):.1f} |")


if __name__ == "__main__":
    main()
