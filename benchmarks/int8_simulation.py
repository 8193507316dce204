"""Plain w8a8 (no fine-tuning) simulated in PyTorch: where one photo loses fidelity, and how the
range-equalization strength changes it. The model is prepared for int8 as ``bundle`` prepares it
(range equalization + GPTQ on the calibration tiles) and run through
``restorekit.quantize.finetune.w8a8_simulation``; PSNR is against the fp32 model, on 256x256 (or
``--crop``) centre crops, outputs clipped to [0, 1].

``budget PHOTO``: an error budget of one photo at the default alpha -
w8a8 with the calibration tiles' ranges (what plain int8 gives); with the photo's own ranges
(calibration cannot do better: if it stays low, clipping is not the cause); int8 activations
only (on the equalized model before GPTQ, so the weights really are float); int8 weights only;
the model output's quantizer alone (a floor every activation row shares); each conv's
activations alone in int8 (how the loss is spread), and what those rows predict together.

``alphas``: by ``equalization_alpha``, the mean on the calibration tiles (what a selection could
see) and mean / worst / count under 42 dB on held-out photos.

``finetune``: by number of fine-tuning steps (``--steps``; 0 = plain w8a8), at the default alpha,
with the library's training settings (``--augment``, ``--tie-prelu-grids``, ``--train-crop``,
``--batch`` change them; ``--split-prelus`` prepares the split-PReLU model of bundle's int8 ONNX;
``--weight-lr 0``: only the activation ranges are learned): held-out mean
/ worst / count under 42 dB of the w8a8 simulation with the learned ranges, and of the prepared
float model run without quantization against the original (how far the weights moved).

    .venv/bin/python benchmarks/int8_simulation.py budget ../shared/weights/realesr-animevideov3.pth \\
        ../shared/photos/bw/ddcolor_Broadway_at_the_United_States_Hotel_Sara.jpg
    .venv/bin/python benchmarks/int8_simulation.py alphas ../shared/weights/realesr-animevideov3.pth \\
        --alphas 0.5,0.65,0.8,0.9 --photos ../shared/photos/{bw,faces,whole,old,gray_faces,old_scratched}
    .venv/bin/python benchmarks/int8_simulation.py finetune ../shared/weights/realesr-animevideov3.pth \
        --steps 0,300,600 --photos ../shared/photos/{bw,faces,whole,old,gray_faces,old_scratched}
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


def _fidelity(prepared, calib, crops, refs, **simulation) -> list[float]:
    """PSNR per crop of ``prepared`` run w8a8-simulated with the ranges of ``calib``."""
    import torch

    from restorekit.core.metrics import psnr
    from restorekit.quantize.finetune import w8a8_simulation

    with torch.no_grad(), w8a8_simulation(prepared, calib, **simulation) as fq:
        return [psnr(fq(torch.from_numpy(c)).clamp(0, 1).numpy(), r) for c, r in zip(crops, refs)]


def _with_learned_ranges(prepared, calib, info):
    """The w8a8 simulation of ``prepared`` with the activation ranges fine-tuning learned (``info``)."""
    import torch

    from restorekit.quantize.finetune import w8a8_simulation

    simulation = w8a8_simulation(prepared, calib)
    with torch.no_grad():
        for name, ranges in info.get("activation_ranges", {}).items():
            key = name.replace(".", "/")
            for fq, end in ((simulation.in_fq, "input"), (simulation.out_fq, "output")):
                if end in ranges and key in fq:
                    lo, hi = ranges[end]
                    fq[key].lo0.fill_(min(lo, 0.0))
                    fq[key].hi0.fill_(max(hi, 1e-6))
                    fq[key].log_scale.zero_()
    return simulation


def _row(label, scores, photos) -> str:
    held = np.array(scores)
    return (f"| {label} | {held.mean():.2f} / {held.min():.2f} | {int((held < 42).sum())} | "
            f"{photos[int(held.argmin())].name[:40]} |")


def finetune_steps(edge, calib, crops, refs, photos, steps: list[int], weight_lr: float | None,
                   extra: dict | None = None) -> None:
    """Print the ``finetune`` table (see the module docstring)."""
    import time

    import torch

    from restorekit.core.metrics import psnr
    from restorekit.quantize.prepare import prepare_for_int8

    print(f"{len(calib)} calibration tiles, {len(crops)} held-out crops; PSNR vs the fp32 model (dB)")
    print("| steps, run | mean / worst | < 42 dB | worst photo |")
    print("|---|---:|---:|---|")
    for n in steps:
        t0 = time.time()
        settings = {"steps": n, **({} if weight_lr is None else {"lr": weight_lr}), **(extra or {})}
        prepared, info = prepare_for_int8(edge, calib, finetune=settings if n else None)
        with torch.no_grad(), _with_learned_ranges(prepared, calib, info) as fq:
            w8a8 = [psnr(fq(torch.from_numpy(c)).clamp(0, 1).numpy(), r) for c, r in zip(crops, refs)]
        with torch.no_grad():
            drift = [psnr(prepared(torch.from_numpy(c)).clamp(0, 1).numpy(), r) for c, r in zip(crops, refs)]
        print(_row(f"{n}, w8a8", w8a8, photos), flush=True)
        print(_row(f"{n}, prepared float model, no quantization ({time.time() - t0:.0f} s)", drift, photos), flush=True)


def error_budget(edge, prepared, calib, crop, ref, alpha) -> None:
    """Print the error budget of one crop (see the module docstring).

    ``prepared`` carries GPTQ-rounded weights (already on the int8 grid), so the activation rows
    run the equalized model before rounding instead: there, "weights float" is true. Every row
    also has the model output's uint8 quantizer (the runtime quantizes the image output), so the
    per-conv rows share that floor and the sum adds only what each conv adds above it."""
    from restorekit.quantize.prepare import equalize_ranges
    from restorekit.quantize.recipe import quantizable_layers

    equalized, _ = equalize_ranges(edge, calib, alpha)
    convs = [n for n, kind in quantizable_layers(prepared).items() if kind == "Conv2d"]

    def one(model, **kw):
        return _fidelity(model, kw.pop("ranges", calib), [crop], [ref], **kw)[0]

    floor = one(equalized, weights=False, keep_float=frozenset(convs))
    activations_only = one(equalized, weights=False)
    rows = [("w8a8, calibration tiles' ranges", one(prepared)), ("w8a8, the photo's own ranges", one(prepared, ranges=[crop])),
            ("int8 activations only (weights float)", activations_only),
            ("int8 weights only (GPTQ; activations float)", one(prepared, activations=False)),
            ("the output quantizer alone", floor)]
    alone = {n: one(equalized, weights=False, keep_float=frozenset(c for c in convs if c != n)) for n in convs}
    for name, v in rows:
        print(f"  {name:<44} {v:6.2f}")
    print("  each conv's activations alone in int8 (weights and the other convs float; with the output quantizer):")
    for n, v in alone.items():
        print(f"    {n:<20} {v:6.2f}")
    # independent errors add as powers: the floor once, plus what each conv adds above it
    power = lambda db: 10 ** (-db / 10)  # noqa: E731
    total = -10 * np.log10(power(floor) + sum(max(power(v) - power(floor), 0.0) for v in alone.values()))
    print(f"  predicted from the per-conv rows if their errors add  {total:6.2f}  (vs {activations_only:.2f} measured together)")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=["budget", "alphas", "finetune"])
    ap.add_argument("model", help="checkpoint or zoo name")
    ap.add_argument("photo", nargs="?", help="budget: the photo")
    ap.add_argument("--alpha", type=float, default=None, help="budget: the equalization strength (default: bundle's)")
    ap.add_argument("--alphas", default="0.5,0.65,0.8,0.9", help="alphas: the equalization strengths to compare")
    ap.add_argument("--photos", nargs="*", default=[], help="alphas, finetune: folders of held-out photos")
    ap.add_argument("--steps", default="0,300,600", help="finetune: the step counts to compare (0 = none)")
    ap.add_argument("--weight-lr", type=float, default=None,
                    help="finetune: the weights' learning rate (default: bundle's; 0 learns only the ranges)")
    ap.add_argument("--augment", type=float, default=None,
                    help="finetune: the recipe's finetune.augment (default: the library's, 0; bundle's int8 uses 0.75)")
    ap.add_argument("--tie-prelu-grids", action="store_true",
                    help="finetune: the recipe's finetune.tie_prelu_grids (default: the library's, off; bundle's int8 ties)")
    ap.add_argument("--split-prelus", action="store_true",
                    help="every other PReLU split into a ReLU on doubled channels (recipe split_prelus; bundle's "
                         "int8 on ONNX); the other modes too")
    ap.add_argument("--train-crop", type=int, default=None, help="finetune: training crop side (default 64)")
    ap.add_argument("--batch", type=int, default=None, help="finetune: training crops per step (default 8)")
    ap.add_argument("--target", default="onnx", choices=["onnx", "tflite", "coreml"], help="whose edge rewrites")
    ap.add_argument("--calib", default=str(ROOT / "sample_images"))
    ap.add_argument("--calib-count", type=int, default=16)
    ap.add_argument("--crop", type=int, default=256)
    args = ap.parse_args()
    if args.mode == "budget" and not args.photo:
        ap.error("budget needs PHOTO")

    import torch

    from onnx_int8_check import centre_crop
    from restorekit.convert import edge_model
    from restorekit.core.errors import RestorekitError
    from restorekit.models.loader import load_model
    from restorekit.quantize.calibration import calibration_tiles
    from restorekit.quantize.prepare import prepare_for_int8
    from restorekit.core.image import list_images

    torch.set_num_threads(2)
    try:
        alphas = [float(a) for a in args.alphas.split(",")]
        steps = [int(n) for n in args.steps.split(",")]
        net = load_model(args.model).module.eval()
        calib = calibration_tiles(args.calib, tile=args.crop, count=args.calib_count)
        photos = [Path(args.photo)] if args.mode == "budget" else [p for d in args.photos for p in list_images(Path(d))]
        crops = [centre_crop(p, args.crop) for p in photos]
    except (RestorekitError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    edge, _ = edge_model(net, args.target, split_prelus=args.split_prelus)
    with torch.no_grad():
        ref = lambda x: net(torch.from_numpy(x)).clamp(0, 1).numpy()  # noqa: E731
        calib_refs, refs = [ref(t) for t in calib], [ref(c) for c in crops]
    if args.mode == "budget":
        prepared, info = prepare_for_int8(edge, calib, **({} if args.alpha is None else {"alpha": args.alpha}))
        print(f"{photos[0].name}, {args.crop}x{args.crop} centre crop, alpha {info['equalization_alpha']:g}, "
              "PSNR vs fp32 (dB):")
        error_budget(edge, prepared, calib, crops[0], refs[0], info["equalization_alpha"])
        return 0
    if args.mode == "finetune":
        extra = {k: v for k, v in (("augment", args.augment), ("crop", args.train_crop), ("batch", args.batch),
                                   ("tie_prelu_grids", args.tie_prelu_grids or None)) if v is not None}
        finetune_steps(edge, calib, crops, refs, photos, steps, args.weight_lr, extra)
        return 0
    print(f"{len(calib)} calibration tiles, {len(crops)} held-out crops; PSNR of plain w8a8 vs fp32 (dB)")
    print("| alpha | calibration tiles | held-out mean | held-out worst | held-out < 42 dB |")
    print("|---:|---:|---:|---:|---:|")
    for alpha in alphas:
        prepared, _ = prepare_for_int8(edge, calib, alpha=alpha)
        cal = np.mean(_fidelity(prepared, calib, calib, calib_refs))
        held = np.array(_fidelity(prepared, calib, crops, refs) or [np.nan])
        print(f"| {alpha:g} | {cal:.2f} | {held.mean():.2f} | {held.min():.2f} | {int((held < 42).sum())} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
