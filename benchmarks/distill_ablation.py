"""Student ablations for the Real-ESRGAN Compact -> x4 distillation, on a fixed pool of pairs.

    # once: 6000 degraded 64 px LR crops of the training photos and the teacher's output (~2.5 min)
    .venv/bin/python benchmarks/distill_ablation.py build /tmp/pool6k.npz --samples 6000
    # then one line per variant (1 thread each, so two run side by side on 2 cores)
    .venv/bin/python benchmarks/distill_ablation.py train /tmp/pool6k.npz --channels 32 --convs 6 --steps 6000
    .venv/bin/python benchmarks/distill_ablation.py train /tmp/pool6k.npz --loss l2 --steps 6000
    .venv/bin/python benchmarks/distill_ablation.py train /tmp/pool6k.npz --channels 36 --tail 1 --steps 6000

``build`` uses ``restorekit distill``'s own sampling (``distill_batch``, second-order degradation,
seed 7) on the same training / held-out split, and stores the validation crops and the teacher's
output on them (``validation_set``, seed 0: the crops ``restorekit distill`` validates on).
``train`` trains an EdgeRestoreNet (``--tail 1`` swaps the 3x3 tail for a 1x1 one,
``--dilation 2`` dilates every other body conv) with Adam, warm-up + cosine, batch 8, on random
draws from the pool, and prints PSNR against the teacher (and bicubic's) on the held-out crops
every 1000 steps, plus the MACs against the 1/8 budget.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
TEACHER = SHARED / "weights" / "realesr-animevideov3.pth"


def build(out: str, samples: int) -> None:
    """Write the pool of (LR, teacher output) pairs and the validation crops to ``out`` (.npz)."""
    from restorekit.training.data import holdout_count, image_folders, load_training_images
    from restorekit.training.distill import distill_batch, load_teacher, validation_set
    from restorekit.training.loop import to_nchw

    data = load_training_images(image_folders([SHARED / "photos"]), min_size=256)
    n_val = holdout_count(len(data.images), None)
    train, held = data.images[:-n_val], data.images[-n_val:]
    teacher = load_teacher(TEACHER, 4, 64).module.eval()
    cpu = torch.device("cpu")
    lrs, targets, t0 = [], [], time.time()
    for step in range(samples // 8):
        x_np, _ = distill_batch(train, 7, step, 8, 64, 4, "second-order")
        q = np.clip(np.round(x_np * 255), 0, 255)  # second-order LR ends in JPEG: already 8-bit
        with torch.no_grad():
            y = teacher(to_nchw((q / 255).astype(np.float32), cpu)).clamp(0, 1)
        lrs.append(q.astype(np.uint8))
        targets.append(np.round(y.permute(0, 2, 3, 1).numpy() * 255).astype(np.uint8))
    val_lr, _ = validation_set(held, 0, 16, 64, 4, "second-order")
    with torch.no_grad():
        val_t = teacher(to_nchw(val_lr, cpu)).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    np.savez(out, lr=np.concatenate(lrs), tg=np.concatenate(targets), vl=val_lr, vt=val_t)
    print(f"wrote {out}: {samples // 8 * 8} pairs in {time.time() - t0:.0f} s")


def train(pool: str, channels: int, convs: int, tail: int, loss_name: str, batch: int, lr: float, steps: int,
          threads: int, dilation: int = 1) -> None:
    """Train one student variant on the pool and print its held-out PSNR against the teacher."""
    from restorekit.models.edgenet import EdgeRestoreNet
    from restorekit.models.loader import count_macs
    from restorekit.models.students import COMPACT_MACS_PER_MEGAPIXEL, init_weights
    from restorekit.training.distill import batch_psnr
    from restorekit.training.loop import learning_rate

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    d = np.load(pool)
    lrs, targets = d["lr"], d["tg"]
    val_lr = torch.from_numpy(d["vl"]).permute(0, 3, 1, 2).contiguous()
    val_t = torch.from_numpy(d["vt"]).permute(0, 3, 1, 2).contiguous()
    bicubic = batch_psnr(F.interpolate(val_lr, scale_factor=4, mode="bicubic", align_corners=False).clamp(0, 1), val_t)
    net = EdgeRestoreNet(3, channels, convs, 4)
    init_weights(net)
    if tail == 1:
        net.tail = torch.nn.Conv2d(channels, 48, 1)
        torch.nn.init.zeros_(net.tail.weight)
        torch.nn.init.zeros_(net.tail.bias)
    for conv in net.body[1::2]:  # every other body conv: a wider receptive field at the same MACs
        conv.dilation, conv.padding = (dilation, dilation), (dilation, dilation)
    ratio = count_macs(net) / COMPACT_MACS_PER_MEGAPIXEL
    print(f"{channels} ch, {convs} convs (dilation {dilation} on every other), {tail}x{tail} tail: {ratio:.3f} x the teacher's MACs (budget 0.125); "
          f"loss {loss_name}, batch {batch}, lr {lr:g}, {steps} steps; bicubic vs teacher {bicubic:.2f} dB")
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    rng, t0 = np.random.default_rng(1), time.time()
    for step in range(steps):
        idx = rng.integers(len(lrs), size=batch)
        x = torch.from_numpy(lrs[idx]).permute(0, 3, 1, 2).float() / 255
        y = torch.from_numpy(targets[idx]).permute(0, 3, 1, 2).float() / 255
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, lr)
        err = net(x) - y
        loss = err.abs().mean() if loss_name == "l1" else (err**2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if (step + 1) % 1000 == 0 or step + 1 == steps:
            with torch.no_grad():
                v = batch_psnr(net(val_lr), val_t)
            print(f"step {step + 1} ({time.time() - t0:.0f} s): student vs teacher {v:.2f} dB, "
                  f"gain over bicubic {v - bicubic:+.2f} dB", flush=True)


def main() -> None:
    """Parse the command line and run ``build`` or ``train``."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("out")
    b.add_argument("--samples", type=int, default=6000)
    t = sub.add_parser("train")
    t.add_argument("pool")
    t.add_argument("--channels", type=int, default=32)
    t.add_argument("--convs", type=int, default=6)
    t.add_argument("--tail", type=int, choices=(1, 3), default=3)
    t.add_argument("--loss", choices=("l1", "l2"), default="l1")
    t.add_argument("--batch", type=int, default=8)
    t.add_argument("--lr", type=float, default=2e-3)
    t.add_argument("--steps", type=int, default=6000)
    t.add_argument("--threads", type=int, default=1)
    t.add_argument("--dilation", type=int, default=1, help="dilation of body convs 2, 4, ...")
    a = ap.parse_args()
    if a.cmd == "build":
        build(a.out, a.samples)
    else:
        train(a.pool, a.channels, a.convs, a.tail, a.loss, a.batch, a.lr, a.steps, a.threads, a.dilation)


if __name__ == "__main__":
    main()
