"""Side-by-side pictures of a distilled student on its held-out photos: degraded input, bicubic,
student, teacher, each output captioned with its PSNR against the teacher.

    .venv/bin/python scripts/make_distill_figure.py edge-s-x4.safetensors \
        ../shared/weights/realesr-animevideov3.pth ../shared/photos docs/distillation_examples.png

The held-out photos are found as ``restorekit distill`` found them (same folders, same load
order, same hold-out count: the student's metadata must carry the run's data fingerprint). Each
gets one crop (LR side ``--size``, default 96) degraded by the run's pipeline at a fixed seed.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from restorekit.core.errors import RestorekitError  # noqa: E402
from restorekit.models.builtin import read_safetensors_metadata  # noqa: E402
from restorekit.models.loader import load_model  # noqa: E402
from restorekit.training.data import holdout_count, image_folders, load_training_images  # noqa: E402
from restorekit.training.distill import batch_psnr, sample_pair  # noqa: E402

FIGURE_SEED = 2026


def main() -> None:
    """Draw the figure of the student given on the command line."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("student")
    ap.add_argument("teacher")
    ap.add_argument("data")
    ap.add_argument("out")
    ap.add_argument("--size", type=int, default=96, help="LR crop side")
    args = ap.parse_args()

    meta = read_safetensors_metadata(args.student)
    scale = int(meta["scale"])
    data = load_training_images(image_folders([args.data]), min_size=int(meta["patch_size"]) * scale)
    if data.fingerprint != meta["data_fingerprint"]:
        raise SystemExit(f"{args.data} is not the data {args.student} was distilled on (fingerprint differs)")
    n_val = holdout_count(len(data.images), None)
    held = list(zip(data.paths[-n_val:], data.images[-n_val:]))
    student = load_model(args.student).module.eval()
    teacher = load_model(args.teacher).module.eval()

    fig, axes = plt.subplots(len(held), 4, figsize=(13, 3.4 * len(held)), dpi=100, squeeze=False)
    for row, (path, img) in zip(axes, held):
        size = min(args.size, min(img.shape[:2]) // scale)
        lr, _ = sample_pair([img], np.random.default_rng([FIGURE_SEED]), size, scale, meta["degradation"],
                            augment=False)
        x = torch.from_numpy(lr).permute(2, 0, 1)[None].contiguous()
        with torch.no_grad():
            t = teacher(x).clamp(0, 1)
            s = student(x).clamp(0, 1)
        b = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
        near = F.interpolate(x, scale_factor=scale, mode="nearest")
        panels = [(near, f"{path.name}, degraded ({size} px)"),
                  (b, f"bicubic: {batch_psnr(b, t):.2f} dB"),
                  (s, f"student {meta['student']}: {batch_psnr(s, t):.2f} dB"),
                  (t, f"teacher {meta['teacher']}")]
        for ax, (im, title) in zip(row, panels):
            ax.imshow(im[0].permute(1, 2, 0).numpy())
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("PSNR against the teacher's output; held-out photos, never trained on", fontsize=10)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    try:
        main()
    except RestorekitError as exc:  # bad checkpoint, missing photos ...: one line, not a traceback
        raise SystemExit(f"error: {exc}") from None
