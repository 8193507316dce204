"""Knowledge distillation: a big restoration teacher -> a small named :class:`EdgeRestoreNet`.

:func:`distill` loads the teacher with :func:`restorekit.models.loader.load_model` (any checkpoint
restorekit reads, e.g. Real-ESRGAN Compact), builds a student from
:mod:`restorekit.models.students` (``edge-s-x4`` ...), and trains the student to reproduce the
teacher on degraded photos: each step cuts HR patches from the training photos (random crop,
flips / 90-degree rotations), degrades them to LR inputs (Real-ESRGAN second-order by default,
or the classic :func:`degrade_pair`), runs the frozen fp32 teacher on the LR, and minimises
``L1(student(LR), target)`` (+ ``edge_weight`` x L1 of the Sobel gradients), with
``target = (1 - gt_weight) * teacher(LR) + gt_weight * HR``.

``patch_size`` is the **LR** (network input) side, so a step costs the same at every scale; the
HR crop is ``patch_size * scale``.

``pool_size`` > 0: instead of degrading and labelling every sample of every step, train from a
:class:`restorekit.training.pool.PairPool` of cached (LR, teacher output) pairs, ``pool_refresh``
of them replaced each step: the teacher and the degradation pipeline, most of a CPU step, then
run ``pool_refresh`` times per step instead of ``batch_size`` times.

Determinism: the student is initialised after ``torch.manual_seed(seed)``; sample ``i`` of the
*global* batch of step ``s`` is a pure function of ``np.random.default_rng([seed, s, i])``. A
resumed run therefore sees the same samples as an uninterrupted one, and under ``torchrun`` rank
``r`` of ``W`` draws samples ``[r B/W, (r+1) B/W)`` of that same global batch: DDP's gradient
average equals the one-process gradient of the global batch (within float noise).

Validation: the last ``holdout`` photos (load order; auto: 10 %, 1 to 8, none when there is a
single photo) are never trained on; ``val_crops`` fixed crops of them (LR side ``patch_size``,
degraded like the training inputs, ``default_rng([seed, VAL_TAG, i])``) are scored every
``val_every`` steps: PSNR of student and of bicubic upscaling against the teacher's output.

Checkpoints ``<out>.ckpt.pt`` (same layout as :mod:`restorekit.training.train`'s: a ``torch.save``
dict of tensors and plain values read back with ``weights_only=True``) hold the student, Adam,
the AMP scaler, the fake-quant observers, the loss / validation history and the step; a run
resumes from one. Outputs: ``out`` (.safetensors, EdgeRestoreNet metadata + distillation
metadata, byte-reproducible) and a model card ``out.with_suffix('.md')``.

``qat``: after the float steps, ``qat_steps`` (default 10 % of ``steps``) more steps train through
simulated int8 (per-channel symmetric int8 weights, per-tensor uint8 activations after every
ReLU, :mod:`torch.ao.quantization` FakeQuantize with straight-through gradients), at
``QAT_LR_FRACTION`` of the learning rate. The saved weights are the float ones.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from restorekit.training.train import (_atomic_save, _augment, checkpoint_path, learning_rate, load_training_images,
                                      safetensors_bytes)
from restorekit.core.errors import BadInputError

CHECKPOINT_FORMAT = "restorekit-distill-checkpoint/1"
DEGRADATIONS = ("second-order", "classic")
VAL_TAG = 2**32 - 1  # seed-sequence word of the validation crops (a training step never reaches it)
QAT_LR_FRACTION = 0.05  # QAT fine-tune: cosine from 5 % of the base learning rate
MAX_HOLDOUT = 8
LEGACY_SETTINGS = {"pool_size": 0, "pool_refresh": 0}  # checkpoints from before the pool: fresh samples


# --------------------------------------------------------------------------------------------
# Data: one sample is a pure function of (seed, step, index)
# --------------------------------------------------------------------------------------------


def degrade(hr: np.ndarray, scale: int, rng: np.random.Generator, degradation: str) -> np.ndarray:
    """LR input for an HR patch with the named pipeline."""
    if degradation == "classic":
        from restorekit.degrade.synthetic import degrade_pair

        return degrade_pair(hr, scale, rng)
    from restorekit.degrade.second_order import second_order_pair

    return second_order_pair(hr, rng, scale)[0]


def sample_pair(images: Sequence[np.ndarray], rng: np.random.Generator, patch_size: int, scale: int,
                degradation: str, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) of one random crop: HR side ``patch_size * scale``."""
    hp = patch_size * scale
    img = images[int(rng.integers(len(images)))]
    h, w = img.shape[:2]
    y, x = int(rng.integers(h - hp + 1)), int(rng.integers(w - hp + 1))
    hr = img[y : y + hp, x : x + hp]
    hr = _augment(hr, rng) if augment else np.ascontiguousarray(hr)
    return degrade(hr, scale, rng, degradation), hr


def distill_batch(images: Sequence[np.ndarray], seed: int, step: int, batch_size: int, patch_size: int,
                  scale: int, degradation: str, rank: int = 0, world_size: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Rank ``rank``'s slice of the global (LR, HR) batch of step ``step`` (NHWC float32)."""
    per = batch_size // world_size
    pairs = [sample_pair(images, np.random.default_rng([int(seed), int(step), i]), patch_size, scale, degradation)
             for i in range(rank * per, (rank + 1) * per)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def validation_set(images: Sequence[np.ndarray], seed: int, count: int, patch_size: int, scale: int,
                   degradation: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed (LR, HR) validation crops, crop ``i`` from image ``i % len(images)``."""
    pairs = [sample_pair([images[i % len(images)]], np.random.default_rng([int(seed), VAL_TAG, i]), patch_size,
                         scale, degradation, augment=False) for i in range(count)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


# --------------------------------------------------------------------------------------------
# Losses, metrics, fake quantization
# --------------------------------------------------------------------------------------------


def sobel(img):
    """Horizontal and vertical Sobel gradients of every channel (NCHW -> N,2C,H,W)."""
    import torch
    from torch.nn import functional as F

    k = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], dtype=img.dtype, device=img.device)
    c = img.shape[1]
    w = torch.stack([k, k.t()]).unsqueeze(1).repeat(c, 1, 1, 1)
    return F.conv2d(F.pad(img, (1, 1, 1, 1), mode="replicate"), w, groups=c)


def distill_loss(pred, target, edge_weight: float = 0.0):
    """L1 + ``edge_weight`` x L1 of the Sobel gradients."""
    from torch.nn import functional as F

    loss = F.l1_loss(pred, target)
    if edge_weight > 0:
        loss = loss + edge_weight * F.l1_loss(sobel(pred), sobel(target))
    return loss


def psnr(a, b) -> float:
    """Mean over the batch of per-image PSNR (dB, peak 1)."""
    import torch

    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).mean())


def _fake_quant_modules(n_convs: int):
    import torch
    from torch.ao.quantization import FakeQuantize, MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver
    from torch import nn

    # weights: the current range every step (averaging 1); activations: moving average of the range
    weights = nn.ModuleList(FakeQuantize(observer=MovingAveragePerChannelMinMaxObserver, averaging_constant=1.0,
                                         quant_min=-127, quant_max=127, dtype=torch.qint8,
                                         qscheme=torch.per_channel_symmetric, ch_axis=0) for _ in range(n_convs))
    acts = nn.ModuleList(FakeQuantize(observer=MovingAverageMinMaxObserver, quant_min=0, quant_max=255,
                                      dtype=torch.quint8, qscheme=torch.per_tensor_affine) for _ in range(n_convs - 1))
    return weights, acts


def _qat_class():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class FakeQuantEdgeNet(nn.Module):
        """An :class:`EdgeRestoreNet` run through simulated int8 (``active``) or plainly: conv
        weights fake-quantized per output channel (symmetric int8), every post-ReLU activation
        per tensor (uint8). The student's own float weights are the only parameters."""

        def __init__(self, net):
            super().__init__()
            self.net = net
            self.active = False
            self.weight_fq, self.act_fq = _fake_quant_modules(net.num_convs + 2)

        def fq_state(self) -> dict:
            return {k: v for k, v in self.state_dict().items() if not k.startswith("net.")}

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            n = self.net
            if not self.active:
                return n(x)
            convs = [n.head, *n.body, n.tail]
            y = x
            for i, conv in enumerate(convs):
                y = F.conv2d(y, self.weight_fq[i](conv.weight), conv.bias, padding=1)
                if i < len(convs) - 1:
                    y = self.act_fq[i](F.relu(y))
            y = y + F.conv2d(x, n.anchor)
            if n.scale > 1:
                y = F.pixel_shuffle(y, n.scale)
            return torch.clamp(y, 0.0, 1.0)

    return FakeQuantEdgeNet


def fake_quant_edgenet(net):
    """Wrap an EdgeRestoreNet for quantization-aware training (set ``.active = True`` to quantize)."""
    return _qat_class()(net)


# --------------------------------------------------------------------------------------------
# The run
# --------------------------------------------------------------------------------------------


@dataclass
class DistillResult:
    """What a run produced (every rank gets the same losses; only rank 0 writes files)."""

    out: Path
    card: Path
    losses: list[float]  # one per step (global-batch mean), float + QAT steps
    val: list[dict] = field(default_factory=list)  # validation rows (step, loss, PSNRs)
    world_size: int = 1


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _holdout_count(n: int, holdout: int | None) -> int:
    if holdout is None:
        return 0 if n < 2 else min(MAX_HOLDOUT, max(1, n // 10))
    if holdout < 0 or holdout >= n:
        raise BadInputError(f"holdout must be between 0 and {n - 1} (the data has {n} usable images), got {holdout}")
    return holdout


def _check_args(out: Path, steps: int, batch_size: int, patch_size: int, degradation: str, gt_weight: float,
                edge_weight: float, val_every: int, val_crops: int, checkpoint_every: int, qat_steps: int | None,
                world_size: int, pool_size: int = 0, pool_refresh: int = 1) -> Path:
    from restorekit.core.files import check_writable_path

    out = Path(out)
    if out.suffix != ".safetensors":
        raise BadInputError(f"output must be a .safetensors file, got {out}")
    check_writable_path(out)
    if steps < 1:
        raise BadInputError(f"steps must be >= 1, got {steps}")
    if batch_size < 1 or patch_size < 4 or val_every < 1 or val_crops < 1 or checkpoint_every < 1:
        raise BadInputError("batch_size, val_every, val_crops and checkpoint_every must be >= 1, patch_size >= 4")
    if degradation not in DEGRADATIONS:
        raise BadInputError(f"unknown degradation {degradation!r}: choose {' or '.join(DEGRADATIONS)}")
    if not 0.0 <= gt_weight <= 1.0 or edge_weight < 0:
        raise BadInputError(f"gt_weight must be in [0, 1] and edge_weight >= 0, got {gt_weight}, {edge_weight}")
    if qat_steps is not None and qat_steps < 0:
        raise BadInputError(f"qat_steps must be >= 0, got {qat_steps}")
    if batch_size % world_size:
        raise BadInputError(f"batch_size {batch_size} must be a multiple of the number of processes ({world_size})")
    if pool_size < 0 or (pool_size and not 1 <= pool_refresh <= pool_size):
        raise BadInputError(f"pool_size must be >= 0 and pool_refresh in [1, pool_size], got {pool_size}, {pool_refresh}")
    return out


def _load_teacher(teacher_ref, scale: int, patch_size: int):
    from restorekit.models.loader import load_model

    teacher = load_model(teacher_ref)
    spec = teacher.spec
    if spec.task not in ("sr", "restore") or spec.in_channels != 3 or spec.out_channels != 3 or spec.fixed_size:
        raise BadInputError(f"teacher {spec.name} ({spec.architecture}, {spec.task}) is not an RGB image-to-image "
                            "restoration network")
    if spec.scale != scale:
        raise BadInputError(f"teacher {spec.name} upscales x{spec.scale} but the student is x{scale}: "
                            f"pick a -x{spec.scale} student")
    if patch_size % spec.multiple_of:
        raise BadInputError(f"patch_size {patch_size} must be a multiple of {spec.multiple_of} for {spec.name}")
    return teacher


def image_folders(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """Each folder and, below it, every sub-folder that holds images (sorted): ``--data
    ../shared/photos`` takes all its collections. A folder with nothing in it is kept, so the
    loader reports it."""
    from restorekit.core.image import list_images

    out: list[Path] = []
    for d in map(Path, dirs):
        found = [p for p in [d, *sorted(q for q in d.rglob("*") if q.is_dir())] if p.is_dir() and list_images(p)]
        out.extend(found or [d])
    return out


def distill(
    teacher_ref,
    student_name: str,
    data_dirs: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    steps: int,
    seed: int = 0,
    batch_size: int = 8,
    patch_size: int = 64,
    lr: float = 2e-3,
    degradation: str = "second-order",
    gt_weight: float = 0.0,
    edge_weight: float = 0.0,
    val_every: int = 250,
    val_crops: int = 16,
    holdout: int | None = None,
    qat: bool = False,
    qat_steps: int | None = None,
    resume: bool = True,
    checkpoint_every: int = 250,
    progress: bool = True,
    device: str | None = None,
    pool_size: int = 0,
    pool_refresh: int = 1,
) -> DistillResult:
    """Distil ``teacher_ref`` into the student ``student_name`` on photos from ``data_dirs``.

    ``patch_size`` is the LR side of a training crop, ``batch_size`` the global batch (split over
    ``torchrun`` processes). ``pool_size`` > 0 trains from a :class:`PairPool` of that many cached
    teacher outputs, ``pool_refresh`` of them replaced each step (0: fresh samples every step).
    Every bad input (unknown student, scale mismatch, empty data folder, ...) raises
    :class:`BadInputError` before training starts. See the module docstring.
    """
    import torch

    from restorekit.models.students import build_student, student_spec

    rank, world, local_rank = _dist_env()
    out = _check_args(out, steps, batch_size, patch_size, degradation, gt_weight, edge_weight, val_every, val_crops,
                      checkpoint_every, qat_steps, world, pool_size, pool_refresh)
    if device in (None, "auto"):
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BadInputError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} asked for but CUDA is not available here")
    spec = student_spec(student_name)
    scale = spec.scale
    data = load_training_images(image_folders(data_dirs), min_size=patch_size * scale)
    n_val = _holdout_count(len(data.images), holdout)
    train_images = data.images[: len(data.images) - n_val]
    val_images = data.images[len(train_images):] or data.images
    teacher = _load_teacher(teacher_ref, scale, patch_size)
    n_qat = 0 if not qat else (max(1, steps // 10) if qat_steps is None else int(qat_steps))
    total = steps + n_qat

    # --- processes and device ---------------------------------------------------------------
    import torch.distributed as dist

    own_group = world > 1 and not dist.is_initialized()
    if dev.type == "cuda" and world > 1:
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    if own_group:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
        if dev.type == "cpu":  # share the cores instead of oversubscribing them
            local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local))
    main = rank == 0
    try:
        torch.manual_seed(int(seed))
        student = build_student(spec.name).to(dev)
        net = fake_quant_edgenet(student).to(dev) if qat else student
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            wrapped = DistributedDataParallel(net, device_ids=[dev.index] if dev.type == "cuda" else None)
        else:
            wrapped = net
        t_module = teacher.module.to(dev).eval().requires_grad_(False)
        optimizer = torch.optim.Adam(student.parameters(), lr=lr)
        use_amp = dev.type == "cuda"
        amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
        scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)

        settings = {
            "student": spec.name, "config": json.dumps(student.config, sort_keys=True),
            "teacher_sha256": teacher.spec.checkpoint_sha256, "data_fingerprint": data.fingerprint,
            "holdout": n_val, "seed": int(seed), "batch_size": int(batch_size), "patch_size": int(patch_size),
            "lr": float(lr), "degradation": degradation, "gt_weight": float(gt_weight),
            "edge_weight": float(edge_weight), "steps": int(steps), "qat_steps": int(n_qat), "val_crops": int(val_crops),
            "pool_size": int(pool_size), "pool_refresh": int(pool_refresh) if pool_size else 0,
        }
        ckpt = checkpoint_path(out)
        start, losses, val_rows = 0, [], []
        if resume and ckpt.exists():
            state = torch.load(ckpt, map_location=dev, weights_only=True)
            if state.get("format") != CHECKPOINT_FORMAT:
                raise BadInputError(f"not a restorekit distillation checkpoint: {ckpt}")
            differs = [k for k, v in settings.items() if state.get(k, LEGACY_SETTINGS.get(k)) != v]
            if differs:
                raise BadInputError(f"checkpoint {ckpt} was made with different {', '.join(differs)}: "
                                    "delete it or pass resume=False")
            student.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            scaler.load_state_dict(state["scaler"])
            if qat:
                net.load_state_dict({**state["qat_state"], **{f"net.{k}": v for k, v in state["model"].items()}})
            torch.set_rng_state(state["torch_rng"].cpu())
            start = int(state["step"])
            losses = [float(v) for v in state["losses"]]
            val_rows = list(state["val"])

        def save_checkpoint(step: int) -> None:
            if not main:
                return
            payload = {
                "format": CHECKPOINT_FORMAT, **settings,
                "model": student.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
                "qat_state": net.fq_state() if qat else {},
                "step": int(step), "losses": torch.tensor(losses, dtype=torch.float64), "val": val_rows,
                "torch_rng": torch.get_rng_state(),
                "data_rng": f"sample i of step s: numpy.random.default_rng([{int(seed)}, s, i])",
            }
            _atomic_save(ckpt, lambda tmp: torch.save(payload, tmp))

        # --- validation set: degraded crops of the held-out photos and the teacher's output ----
        val_lr = val_hr = val_t = None
        if main:
            lr_np, hr_np = validation_set(val_images, seed, val_crops, patch_size, scale, degradation)
            val_lr, val_hr = _nchw(lr_np, dev), _nchw(hr_np, dev)
            with torch.no_grad():
                val_t = torch.cat([t_module(c).clamp(0, 1) for c in val_lr.split(8)])

        def validate(step: int) -> dict:
            from torch.nn import functional as F

            student.eval()
            with torch.no_grad():
                pred = torch.cat([student(c) for c in val_lr.split(8)])
                bic = F.interpolate(val_lr, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
                row = {"step": int(step), "psnr_student": psnr(pred, val_t), "psnr_bicubic": psnr(bic, val_t),
                       "psnr_student_gt": psnr(pred, val_hr), "psnr_teacher_gt": psnr(val_t, val_hr)}
                if qat and step > steps:  # what int8 would give (observers frozen while measuring)
                    from torch.ao.quantization import disable_observer, enable_observer

                    net.apply(disable_observer)
                    row["psnr_fakequant"] = psnr(torch.cat([net(c) for c in val_lr.split(8)]), val_t)
                    net.apply(enable_observer)
            student.train()
            done = losses[val_rows[-1]["step"] if val_rows else 0 : step]
            row["loss"] = float(np.mean(done)) if done else None
            return row

        pool = None
        if pool_size:
            from restorekit.training.pool import PairPool

            def draw(words):
                return sample_pair(train_images, np.random.default_rng(words), patch_size, scale, degradation)

            pool = PairPool(draw, t_module, seed, pool_size, pool_refresh, dev, keep_hr=gt_weight > 0)

        from rich.console import Console
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                                   TimeRemainingColumn)

        console = Console(stderr=True)
        show = progress and main
        if show:
            console.print(f"distilling {teacher.spec.name} ({teacher.spec.architecture}) -> {spec.name} "
                          f"{student.config}: {len(train_images)} training / {n_val} held-out images, "
                          f"{degradation}, batch {batch_size} x {patch_size}px LR on {world} x {dev}, "
                          f"steps {start}->{total}" + (f" ({n_qat} QAT)" if n_qat else "")
                          + (f", pool of {pool_size} teacher outputs ({pool_refresh} new per step)" if pool else ""))
        bar = Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("loss {task.fields[loss]:.4f}  val {task.fields[val]}"), TimeElapsedColumn(),
                       TimeRemainingColumn(), console=console, disable=not show)
        student.train()
        if main and start == 0 and not val_rows:
            val_rows.append(validate(0))
        step, ema, t0 = start, float("nan"), time.perf_counter()

        def val_text() -> str:
            if not val_rows:
                return "-"
            return f"{val_rows[-1]['psnr_student']:.2f} dB (bicubic {val_rows[-1]['psnr_bicubic']:.2f})"

        try:
            with bar:
                if pool is not None and start < total:
                    fill = bar.add_task("pool", total=pool_size, loss=float("nan"), val="-", phase="pool")
                    pool.fill(start, lambda n: bar.update(fill, completed=n))
                    if show:
                        console.print(f"pool filled: {pool_size} samples, {pool.nbytes / 2**20:.0f} MiB")
                task = bar.add_task("distill", total=total, completed=min(start, total), loss=float("nan"),
                                    val=val_text(), phase="distill")
                while step < total:
                    in_qat = step >= steps
                    if qat:
                        net.active = in_qat
                    if pool is not None:
                        pool.advance(step)
                        x, target, hr = pool.batch(step, batch_size, rank, world)
                    else:
                        x_np, hr_np = distill_batch(train_images, seed, step, batch_size, patch_size, scale,
                                                    degradation, rank, world)
                        x, hr = _nchw(x_np, dev), _nchw(hr_np, dev)
                        with torch.no_grad():
                            target = t_module(x).clamp(0, 1)
                    if gt_weight > 0:
                        target = torch.lerp(target, hr, gt_weight)
                    base, sched = (lr * QAT_LR_FRACTION, learning_rate(step - steps, n_qat, 1.0)) if in_qat else \
                        (lr, learning_rate(step, steps, 1.0))
                    for group in optimizer.param_groups:
                        group["lr"] = base * sched
                    with torch.autocast(dev.type, dtype=amp_dtype, enabled=use_amp and not in_qat):
                        pred = wrapped(x)
                    loss = distill_loss(pred.float(), target, edge_weight)
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                    value = loss.detach()
                    if world > 1:
                        dist.all_reduce(value)
                        value = value / world
                    step += 1
                    losses.append(float(value))
                    ema = losses[-1] if math.isnan(ema) else 0.98 * ema + 0.02 * losses[-1]
                    if main and (step % val_every == 0 or step == total):
                        val_rows.append(validate(step))
                        if show and not console.is_terminal:
                            console.print(f"step {step}/{total} loss {ema:.4f} val {val_text()}")
                    bar.update(task, completed=step, loss=ema, val=val_text(), phase="qat" if in_qat else "distill")
                    if step % checkpoint_every == 0 and step < total:
                        save_checkpoint(step)
        except KeyboardInterrupt:
            save_checkpoint(step)
            raise
        save_checkpoint(step)

        card = out.with_suffix(".md")
        if main:
            if not val_rows or val_rows[-1]["step"] != total:  # resumed after the end: nothing ran
                val_rows.append(validate(total))
            final = val_rows[-1]
            student.eval()
            tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in student.state_dict().items()}
            metadata = {
                "architecture": "EdgeRestoreNet", "task": teacher.spec.task, "scale": str(scale),
                "config": json.dumps(student.config), "student": spec.name, "steps": str(steps),
                "seed": str(seed), "distill": CHECKPOINT_FORMAT.replace("-checkpoint", ""),
                "teacher": teacher.spec.name, "teacher_architecture": teacher.spec.architecture,
                "teacher_sha256": teacher.spec.checkpoint_sha256, "data_fingerprint": data.fingerprint,
                "degradation": degradation, "batch_size": str(batch_size), "patch_size": str(patch_size),
                "lr": repr(float(lr)), "gt_weight": repr(float(gt_weight)), "edge_weight": repr(float(edge_weight)),
                "qat": "true" if qat else "false", "qat_steps": str(n_qat),
                "pool_size": str(pool_size), "pool_refresh": str(settings["pool_refresh"]),
                "val_psnr_student_db": f"{final['psnr_student']:.3f}",
                "val_psnr_bicubic_db": f"{final['psnr_bicubic']:.3f}",
            }
            payload = safetensors_bytes(tensors, metadata)
            _atomic_save(out, lambda tmp: Path(tmp).write_bytes(payload))
            text = _model_card(out, spec, student, teacher.spec, data, train_images, settings, world, dev, val_rows,
                               qat)
            _atomic_save(card, lambda tmp: Path(tmp).write_text(text, encoding="utf-8"))
            if show:
                console.print(f"wrote {out} and {card} ({time.perf_counter() - t0:.0f} s): held-out PSNR vs teacher "
                              f"{final['psnr_student']:.2f} dB (bicubic {final['psnr_bicubic']:.2f} dB)")
        if world > 1:
            dist.barrier()
        return DistillResult(out=out, card=card, losses=losses, val=val_rows, world_size=world)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


def _nchw(a: np.ndarray, dev):
    import torch

    return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).contiguous().to(dev)


def _model_card(out, spec, student, tspec, data, train_images, settings, world, dev, val_rows, qat) -> str:
    """Markdown model card: provenance, measured retention and the loss / validation curve."""
    params = sum(p.numel() for p in student.parameters())
    held = [p.name for p in data.paths[len(train_images):]]
    final = val_rows[-1]
    fq = "psnr_fakequant" in final
    ratio = spec.macs_per_megapixel / tspec.macs_per_megapixel if tspec.macs_per_megapixel else float("nan")
    lines = [
        f"# {out.stem}: `{spec.name}` distilled from `{tspec.name}`",
        "",
        "| | |", "|---|---|",
        f"| student | `{spec.name}`: EdgeRestoreNet {student.config}, {params:,} parameters, "
        f"{spec.macs_per_megapixel / 1e9:.1f} GMAC per input megapixel ({ratio:.3f} x the teacher) |",
        f"| teacher | `{tspec.name}` ({tspec.architecture}, x{tspec.scale}, {tspec.params:,} parameters, "
        f"{tspec.macs_per_megapixel / 1e9:.1f} GMAC/MP), sha256 `{tspec.checkpoint_sha256}` |",
        f"| data | {len(train_images)} training images, fingerprint `{data.fingerprint}`; held out: "
        f"{', '.join(held) if held else 'none (validated on training images)'} |",
        f"| degradation | {settings['degradation']} |",
        f"| training | {settings['steps']} steps"
        + (f" + {settings['qat_steps']} QAT steps (int8 weights per channel, uint8 activations)" if qat else "")
        + f", global batch {settings['batch_size']} x {settings['patch_size']} px LR patches, Adam lr "
        f"{settings['lr']:g} (warm-up + cosine), L1 to the teacher"
        + (f", gt_weight {settings['gt_weight']:g}" if settings["gt_weight"] else "")
        + (f", edge_weight {settings['edge_weight']:g}" if settings["edge_weight"] else "")
        + (f", from a pool of {settings['pool_size']} cached teacher outputs ({settings['pool_refresh']} new per "
           "step)" if settings["pool_size"] else ", fresh samples every step")
        + f", seed {settings['seed']}, {world} process(es) on {dev.type} |",
        "",
        f"## Retention ({settings['val_crops']} held-out crops, degraded inputs)",
        "",
        "| PSNR vs teacher output, student | bicubic | student gain over bicubic | student vs clean HR | "
        "teacher vs clean HR |" + (" fake-int8 student vs teacher |" if fq else ""),
        "|---:|---:|---:|---:|---:|" + ("---:|" if fq else ""),
        f"| {final['psnr_student']:.2f} dB | {final['psnr_bicubic']:.2f} dB | "
        f"{final['psnr_student'] - final['psnr_bicubic']:+.2f} dB | {final['psnr_student_gt']:.2f} dB | "
        f"{final['psnr_teacher_gt']:.2f} dB |" + (f" {final['psnr_fakequant']:.2f} dB |" if fq else ""),
        "",
        f"## Training curve ({settings['val_crops']} crops of {', '.join(held) if held else 'the training images'})",
        "",
        "| step | mean training loss since previous row | PSNR student vs teacher | PSNR bicubic vs teacher |",
        "|---:|---:|---:|---:|",
    ]
    for r in val_rows:
        loss = "–" if r["loss"] is None else f"{r['loss']:.4f}"
        lines.append(f"| {r['step']} | {loss} | {r['psnr_student']:.2f} | {r['psnr_bicubic']:.2f} |")
    return "\n".join(lines) + "\n"
