"""Plain w8a8 fidelity by range-equalization strength (recipe ``equalization_alpha``), simulated in
PyTorch: on the calibration tiles (what a selection could see) and on held-out photo crops.

For each alpha the model is prepared as ``bundle`` prepares it (equalization, then GPTQ on the
16 calibration tiles of ``sample_images/``, no fine-tuning) and run w8a8 fake-quantized.

    .venv/bin/python benchmarks/equalization_sweep.py ../shared/weights/realesr-animevideov3.pth \\
        --alphas 0.5,0.65,0.8,0.9 --photos ../shared/photos/{bw,faces,whole,old,gray_faces,old_scratched}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model", help="checkpoint or zoo name")
    ap.add_argument("--alphas", default="0.5,0.65,0.8,0.9")
    ap.add_argument("--photos", nargs="*", default=[], help="folders of held-out photos (256x256 centre crops)")
    ap.add_argument("--target", default="onnx", choices=["onnx", "tflite", "coreml"], help="whose edge rewrites")
    ap.add_argument("--calib", default=str(ROOT / "sample_images"))
    args = ap.parse_args()

    import torch

    from onnx_int8_check import centre_crop
    from restorekit.convert import edge_model
    from restorekit.errors import RestorekitError
    from restorekit.eval.metrics import psnr
    from restorekit.models.loader import load_model
    from restorekit.quantize.finetune import _fake_quant_setup
    from restorekit.quantize.calibration import calibration_tiles
    from restorekit.quantize.prepare import prepare_for_int8
    from restorekit.runtime.image import list_images

    torch.set_num_threads(2)
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
        net = load_model(args.model).module.eval()
        calib = calibration_tiles(args.calib, tile=256, count=16)
        photos = [p for d in args.photos for p in list_images(Path(d))]
        crops = [centre_crop(p, 256) for p in photos]
    except (RestorekitError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    edge, _ = edge_model(net, args.target)
    with torch.no_grad():
        ref = lambda x: net(torch.from_numpy(x)).clamp(0, 1).numpy()  # noqa: E731
        calib_refs, held_refs = [ref(t) for t in calib], [ref(c) for c in crops]
    print(f"{len(calib)} calibration tiles, {len(crops)} held-out crops; PSNR of plain w8a8 vs fp32 (dB)")
    print("| alpha | calibration tiles | held-out mean | held-out worst | held-out < 42 dB |")
    print("|---:|---:|---:|---:|---:|")
    for alpha in alphas:
        prepared, _ = prepare_for_int8(edge, calib, alpha=alpha)
        with torch.no_grad(), _fake_quant_setup(prepared, calib, frozenset()) as fq:
            run = lambda x: fq(torch.from_numpy(x)).clamp(0, 1).numpy()  # noqa: E731
            cal = np.mean([psnr(run(t), r) for t, r in zip(calib, calib_refs)])
            held = np.array([psnr(run(c), r) for c, r in zip(crops, held_refs)]) if crops else np.array([np.nan])
        print(f"| {alpha:g} | {cal:.2f} | {held.mean():.2f} | {held.min():.2f} | {int((held < 42).sum())} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
