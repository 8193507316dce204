"""Where does w8a8 lose fidelity on one photo? An error budget of plain int8, simulated in PyTorch.

For a model prepared for int8 the way ``bundle`` prepares it (range equalization + GPTQ on the
calibration tiles, no fine-tuning), on the centre crop of PHOTO, PSNR against the fp32 model of:

- w8a8 with the ranges of the calibration tiles (what plain int8 gives);
- w8a8 with the ranges of the photo itself (calibration cannot do better than this: if it stays
  low, clipping is not the cause);
- int8 activations only, and int8 weights only;
- each conv's activations alone in int8 (everything else float): how the loss is spread.

    .venv/bin/python benchmarks/int8_error_budget.py ../shared/weights/realesr-animevideov3.pth \\
        ../shared/photos/bw/ddcolor_Broadway_at_the_United_States_Hotel_Sara.jpg
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
    ap.add_argument("photo")
    ap.add_argument("--target", default="onnx", choices=["onnx", "tflite", "coreml"], help="whose edge rewrites")
    ap.add_argument("--calib", default=str(ROOT / "sample_images"))
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()

    import torch

    from onnx_int8_check import centre_crop
    from restorekit.convert import edge_model
    from restorekit.errors import RestorekitError
    from restorekit.eval.metrics import psnr
    from restorekit.models.loader import load_model
    from restorekit.quantize import finetune as ft
    from restorekit.quantize.calibration import calibration_tiles
    from restorekit.quantize.prepare import prepare_for_int8

    torch.set_num_threads(2)
    try:
        net = load_model(args.model).module.eval()
        calib = calibration_tiles(args.calib, tile=args.crop, count=args.calib_count)
        crop = centre_crop(Path(args.photo), args.crop)
    except (RestorekitError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    edge, _ = edge_model(net, args.target)
    prepared, _ = prepare_for_int8(edge, calib)
    x = torch.from_numpy(crop)
    with torch.no_grad():
        ref = net(x).clamp(0, 1).numpy()

    def score(tiles, keep=frozenset()) -> float:
        with torch.no_grad(), ft._fake_quant_setup(prepared, tiles, keep) as fq:
            return psnr(fq(x).clamp(0, 1).numpy(), ref)

    rows = [("w8a8, calibration tiles' ranges", score(calib)),
            ("w8a8, the photo's own ranges", score([crop]))]
    weight_fq, range_fq = ft._WeightInt8.forward, ft._Range.forward
    try:
        ft._WeightInt8.forward = lambda self, w: w
        rows.append(("int8 activations only", score(calib)))
        convs = [n for n, m in prepared.named_modules() if ft._plain_conv(m)]
        alone = {n: score(calib, frozenset(c for c in convs if c != n)) for n in convs}
        ft._WeightInt8.forward, ft._Range.forward = weight_fq, lambda self, v: v
        rows.append(("int8 weights only", score(calib)))
    finally:
        ft._WeightInt8.forward, ft._Range.forward = weight_fq, range_fq
    print(f"{Path(args.photo).name}, {args.crop}x{args.crop} centre crop, PSNR vs fp32 (dB):")
    for name, v in rows:
        print(f"  {name:<34} {v:6.2f}")
    print("  each conv's activations alone in int8 (rest float):")
    for n, v in alone.items():
        print(f"    {n:<20} {v:6.2f}")
    # independent errors add as powers: what the per-layer losses predict for all of them together
    total = -10 * np.log10(sum(10 ** (-v / 10) for v in alone.values()))
    print(f"  sum of the per-layer error powers  {total:6.2f}  (vs {rows[2][1]:.2f} measured together)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
