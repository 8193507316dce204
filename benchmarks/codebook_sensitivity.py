"""Why a codebook face restorer (CodeFormer) loses fidelity below fp32: codes that flip.

    python benchmarks/codebook_sensitivity.py [--checkpoint codeformer.pth] [--faces DIR] [--count 3]
        [--out docs/experiments/codebook_sensitivity.md]

CodeFormer predicts one of 1024 codebook entries for each of the 16x16 tokens of a 512 px face
(argmax of ``idx_pred_layer``'s logits) and decodes the face from those entries. A precision change
that moves a token's top-1 and top-2 logits past each other swaps a whole 32x32 px patch's code.
For each part of the network (encoder, code-prediction transformer, generator with its fusion
convs) this quantizes the weights in PyTorch the way restorekit's bundles store them (int8
per-channel symmetric, ``w8``; or fp16) or runs the whole net in fp16 arithmetic, and reports how
many codes differ from fp32 and the output PSNR vs fp32, with the weight size of each variant.
Without ``--checkpoint`` it measures the registry's randomly initialised published CodeFormer
(seed 0), as docs/precisions.md does; with the real ``codeformer.pth`` the same command tells
whether its codes are robust enough to ship compressed.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import platform
import sys
from pathlib import Path

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from restorekit.build.bundles import HALF_SIMULATION_REWRITES  # noqa: E402
from restorekit.convert.rewrites import apply_rewrites  # noqa: E402
from restorekit.core.image import read_image  # noqa: E402
from restorekit.core.metrics import psnr  # noqa: E402
from restorekit.quantize.mixed import weight_fake_quant  # noqa: E402

#: The parts of CodeFormer, by the first component of their parameter names.
PARTS = {
    "encoder": ("encoder",),
    "transformer": ("position_emb", "feat_emb", "ft_layers", "idx_pred_layer"),
    "generator + fusion": ("quantize", "generator", "fuse_convs_dict"),
}


def load_codeformer(checkpoint: str | None) -> nn.Module:
    """The face model as restorekit loads it ([0, 1] io): a checkpoint, or the registry's random one."""
    if checkpoint:
        from restorekit.models.loader import load_model

        return load_model(checkpoint).module
    from restorekit.models.arches import ARCHES

    torch.manual_seed(0)
    return ARCHES["CodeFormer"].builder(False).eval()


def _part_of(name: str) -> str:
    head = name.split(".")[0]
    return next(part for part, heads in PARTS.items() if head in heads)


def variant(model: nn.Module, w8: set[str], fp16: set[str]) -> tuple[nn.Module, float]:
    """A copy of ``model`` whose conv/linear weights in the ``w8`` parts are int8 per-channel and in
    the ``fp16`` parts rounded to fp16, and its weight bytes over fp32's."""
    model = copy.deepcopy(model)
    net = model.model
    total = stored = 0.0
    with torch.no_grad():
        for name, p in net.named_parameters():
            part = _part_of(name)
            total += 4 * p.numel()
            stored += p.numel() * (1 if part in w8 and p.dim() >= 2 else 2 if part in fp16 else 4)
        for name, mod in net.named_modules():
            if isinstance(mod, (nn.Conv2d, nn.Linear)) and name:
                part = _part_of(name)
                if part in w8:
                    mod.weight.copy_(weight_fake_quant(mod.weight, 0))
                elif part in fp16:
                    mod.weight.copy_(mod.weight.half().float())
    return model, stored / total


@torch.no_grad()
def run(model: nn.Module, x: torch.Tensor, half: bool = False) -> tuple[np.ndarray, torch.Tensor]:
    """Output image and the per-token code indices of one face."""
    logits = {}
    hook = model.model.idx_pred_layer.register_forward_hook(lambda _m, _i, out: logits.update(out=out))
    try:
        y = model(x.half()).float() if half else model(x)
    finally:
        hook.remove()
    return y.clamp(0, 1).numpy(), logits["out"].float().argmax(-1).flatten()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--checkpoint", help="a CodeFormer checkpoint (default: the registry's random published net)")
    ap.add_argument("--faces", default=str(Path(__file__).resolve().parents[2] / "shared/photos/faces"))
    ap.add_argument("--count", type=int, default=3, help="faces measured (sorted by name)")
    ap.add_argument("--out", default="docs/experiments/codebook_sensitivity.md")
    args = ap.parse_args(argv)
    torch.set_num_threads(max(torch.get_num_threads(), 1))

    model = load_codeformer(args.checkpoint)
    faces = sorted(Path(args.faces).glob("*.png"))[: args.count]
    xs = [torch.from_numpy(np.ascontiguousarray(read_image(f).rgb.transpose(2, 0, 1)))[None] for f in faces]
    refs = [run(model, x) for x in xs]

    margins = []
    with torch.no_grad():
        for x in xs:
            logits = {}
            hook = model.model.idx_pred_layer.register_forward_hook(lambda _m, _i, out: logits.update(out=out))
            model(x)
            hook.remove()
            lg = logits["out"].flatten(0, -2)
            top = lg.topk(2, dim=-1).values
            margins.append(((top[:, 0] - top[:, 1]) / lg.std(dim=-1)).numpy())
    margins = np.concatenate(margins)

    half_model, applied = apply_rewrites(copy.deepcopy(model), HALF_SIMULATION_REWRITES)
    rows = []
    cases = [("fp16 weights (ONNX/TFLite fp16 on a CPU)", set(), set(PARTS), False),
             ("fp16 arithmetic (GPU, TensorRT, Core ML fp16)", set(), set(), True)]
    cases += [(f"w8 weights: {part} only", {part}, set(), False) for part in PARTS]
    cases += [("w8 weights: all parts", set(PARTS), set(), False),
              ("w8 generator + fusion, fp16 encoder and transformer", {"generator + fusion"},
               {"encoder", "transformer"}, False)]
    for label, w8, fp16, half in cases:
        net, size = (half_model.half(), 0.5) if half else variant(model, w8, fp16)
        flips, dbs = [], []
        for x, (ref, codes) in zip(xs, refs):
            y, c = run(net, x, half=half)
            flips.append(int((c != codes).sum()))
            dbs.append(psnr(np.nan_to_num(y), ref))
        rows.append((label, size, flips, dbs))
        print(f"{label}: size {size:.3f}, codes differing {flips} of {codes.numel()}, "
              f"PSNR {' '.join(f'{d:.1f}' for d in dbs)} dB", flush=True)

    q = np.quantile(margins, [0.05, 0.25, 0.5])
    who = args.checkpoint or "registry CodeFormer, published config, random weights (seed 0)"
    lines = [
        "# Codebook sensitivity of CodeFormer: codes that flip below fp32",
        "",
        f"- Command: `python benchmarks/codebook_sensitivity.py --count {args.count}`"
        + (f" --checkpoint {args.checkpoint}" if args.checkpoint else ""),
        f"- Date: {datetime.date.today()}; machine: {platform.machine()}, {torch.get_num_threads()} CPU threads; "
        f"torch {torch.__version__}",
        f"- Model: {who}; faces: {', '.join(f.name for f in faces)} (512 px aligned, `../shared/photos/faces`)",
        f"- Simulation in PyTorch: w8 = int8 per-channel symmetric weights (as restorekit's `w8` bundles), "
        f"fp16 arithmetic = the whole net in half (with the exact rewrites {', '.join(applied) or 'none'}).",
        "- Top-1 minus top-2 logit of each token, over the token's logit standard deviation: "
        f"5 % quantile {q[0]:.3f}, quartile {q[1]:.3f}, median {q[2]:.3f}.",
        "",
        "| variant | weights / fp32 | codes differing from fp32 (of 256, per face) | PSNR vs fp32 (dB, per face) |",
        "|---|---|---|---|",
    ]
    lines += [f"| {label} | {size:.3f} | {', '.join(map(str, flips))} | {', '.join(f'{d:.1f}' for d in dbs)} |"
              for label, size, flips, dbs in rows]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
