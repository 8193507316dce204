"""Plot a distillation run's curve from its checkpoint: training loss and held-out PSNR against
the teacher (student and bicubic).

    .venv/bin/python scripts/plot_distill_curve.py edge-s-x4.ckpt.pt docs/distillation_curve.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402


def main(ckpt: str, out: str) -> None:
    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    losses = state["losses"].numpy()
    val = state["val"]
    k = max(1, len(losses) // 100)
    smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    a.plot(np.arange(len(smooth)) + k, smooth, lw=1)
    a.set(xlabel="step", ylabel=f"L1 to the teacher (mean of {k})", title="training loss")
    steps = [v["step"] for v in val]
    b.plot(steps, [v["psnr_student"] for v in val], "o-", label=f"student {state['student']}")
    b.plot(steps, [v["psnr_bicubic"] for v in val], "--", label="bicubic")
    b.set(xlabel="step", ylabel="PSNR vs teacher output (dB)", title="held-out photos, degraded inputs")
    b.legend()
    for ax in (a, b):
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out)
    print(f"wrote {out} (steps {len(losses)}, last val {val[-1]['psnr_student']:.2f} dB vs bicubic "
          f"{val[-1]['psnr_bicubic']:.2f} dB)")


if __name__ == "__main__":
    if len(sys.argv) != 3 or not Path(sys.argv[1]).is_file():
        sys.exit("usage: plot_distill_curve.py RUN.ckpt.pt OUT.png")
    main(sys.argv[1], sys.argv[2])
