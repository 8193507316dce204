"""``restorekit train | distill``: train a student on synthetic damage; distil a teacher into one.

Multi-GPU / multi-process distillation: ``torchrun --nproc_per_node N -m restorekit.cli.main distill ...``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from restorekit.cli.common import out_console
from restorekit.core.errors import RestorekitError

DataOpt = Annotated[list[Path], typer.Option("--data", help="Folder(s) of clean photos (repeatable).")]
SeedOpt = Annotated[int, typer.Option("--seed")]
DEGRADATION_HELP = ("second-order: Real-ESRGAN two-round blur/resize/noise/JPEG (+ sinc); "
                    "classic: one round (restorekit's degrade_pair).")


def _check_out(out: Path) -> None:
    """Student weights go to a ``.safetensors`` file in an existing directory."""
    if out.suffix != ".safetensors":
        raise RestorekitError(f"--out must end in .safetensors: {out}")
    if not out.parent.exists():
        raise RestorekitError(f"output directory does not exist: {out.parent}")


def train(
    data: DataOpt,
    out: Annotated[Path, typer.Option("--out", help="Output weights (.safetensors).")],
    student: Annotated[str, typer.Option("--student", help="edgenet: 2x restoration (the built-in model's architecture); scratch-unet: scratch/dust/tear detector supervised by synthetic damage masks.")] = "edgenet",
    steps: Annotated[int, typer.Option("--steps", min=1)] = 2000,
    seed: SeedOpt = 0,
    batch_size: Annotated[Optional[int], typer.Option("--batch-size", min=1, help="Default 16 (edgenet), 8 (scratch-unet).")] = None,
    patch_size: Annotated[Optional[int], typer.Option("--patch-size", min=16, help="Training patch side (HR for edgenet). Default 96 (edgenet), 128 (scratch-unet).")] = None,
    channels: Annotated[int, typer.Option("--channels", min=4, help="edgenet width.")] = 48,
    num_convs: Annotated[int, typer.Option("--num-convs", min=1, help="edgenet depth.")] = 6,
    width: Annotated[int, typer.Option("--width", min=4, help="scratch-unet width at full resolution.")] = 16,
    exclude: Annotated[Optional[list[str]], typer.Option("--exclude", help="File names to hold out (repeatable).")] = None,
):
    """Train a student on synthetic degradations of clean photos (resumable, deterministic)."""
    if student not in ("edgenet", "scratch-unet"):
        raise RestorekitError(f"unknown student {student!r}: available: edgenet, scratch-unet")
    _check_out(out)
    from restorekit.training.train import train_scratch_detector, train_supervised

    if student == "edgenet":
        path = train_supervised(data, out, steps=steps, seed=seed, batch_size=batch_size or 16,
                                patch_size=patch_size or 96, model_kwargs={"channels": channels, "num_convs": num_convs},
                                exclude=set(exclude or ()))
    else:
        path = train_scratch_detector(data, out, steps=steps, seed=seed, batch_size=batch_size or 8,
                                      patch_size=patch_size or 128, width=width, exclude=set(exclude or ()))
    out_console.print(f"wrote {path}")


def distill(
    teacher: Annotated[str, typer.Option("--teacher", help="Teacher checkpoint (.pth/.pt/.ckpt/.safetensors) or a zoo name, e.g. realesr-animevideov3.pth (x4).")],
    data: Annotated[list[Path], typer.Option("--data", help="Folder(s) of clean photos (repeatable; sub-folders with images are included).")],
    out: Annotated[Path, typer.Option("--out", help="Output student weights (.safetensors); the model card goes next to it (.md).")],
    student: Annotated[str, typer.Option("--student", help="Student preset edge-{s,m,l}-x{1,2,4}; its scale must match the teacher's.")] = "edge-s-x4",
    steps: Annotated[int, typer.Option("--steps", min=1, help="Float training steps.")] = 20000,
    seed: SeedOpt = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Global batch (split over torchrun processes).")] = 8,
    patch_size: Annotated[int, typer.Option("--patch-size", min=4, help="LR (input) patch side; the HR crop is patch x scale.")] = 64,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (warm-up + cosine decay).")] = 2e-3,
    degradation: Annotated[str, typer.Option("--degradation", help=DEGRADATION_HELP)] = "second-order",
    gt_weight: Annotated[float, typer.Option("--gt-weight", min=0.0, max=1.0, help="Mix of the clean HR into the target (0 = teacher only).")] = 0.0,
    edge_weight: Annotated[float, typer.Option("--edge-weight", min=0.0, help="Weight of the L1 loss on Sobel gradients.")] = 0.0,
    val_every: Annotated[int, typer.Option("--val-every", min=1, help="Validate on the held-out crops every N steps.")] = 250,
    holdout: Annotated[Optional[int], typer.Option("--holdout", min=0, help="Photos held out for validation (default: 10 %, 1 to 8).")] = None,
    qat: Annotated[bool, typer.Option("--qat/--no-qat", help="Finish with quantization-aware fine-tuning (int8 weights, uint8 activations).")] = False,
    qat_steps: Annotated[Optional[int], typer.Option("--qat-steps", min=0, help="QAT steps after the float ones (default: 10 % of --steps).")] = None,
    device: Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda, cuda:N.")] = "auto",
    resume: Annotated[bool, typer.Option("--resume/--restart", help="Continue from <out>.ckpt.pt when present.")] = True,
    pool_size: Annotated[int, typer.Option("--pool-size", min=0, help="Train from a pool of this many cached teacher outputs (0: degrade and run the teacher for every sample of every step).")] = 0,
    pool_refresh: Annotated[int, typer.Option("--pool-refresh", min=1, help="New samples replacing the oldest in the pool each step.")] = 1,
    workers: Annotated[Optional[int], typer.Option("--workers", min=0, help="Processes that make the degraded samples ahead of the steps (default: on CUDA the cores less one, on a CPU 0: training takes the cores there). The samples are the same whatever the count.")] = None,
):
    """Distil a teacher into a small edge student on degraded photos (resumable, deterministic, torchrun-ready)."""
    from restorekit.models.students import student_spec
    from restorekit.training.distill import DEGRADATIONS, distill as run_distill

    _check_out(out)
    if degradation not in DEGRADATIONS:
        raise RestorekitError(f"unknown --degradation {degradation!r}: choose {', '.join(DEGRADATIONS)}")
    student_spec(student)  # unknown names fail here, before the teacher loads
    if device != "auto" and not (device == "cpu" or device.startswith("cuda")):
        raise RestorekitError(f"unknown --device {device!r}: auto, cpu, cuda or cuda:N")
    return run_distill(teacher, student, data, out, steps=steps, seed=seed, batch_size=batch_size,
                       patch_size=patch_size, lr=lr, degradation=degradation, gt_weight=gt_weight,
                       edge_weight=edge_weight, val_every=val_every, holdout=holdout, qat=qat, qat_steps=qat_steps,
                       resume=resume, device=None if device == "auto" else device, pool_size=pool_size,
                       pool_refresh=pool_refresh, workers=workers)
