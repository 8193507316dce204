"""Knowledge distillation: a big restoration teacher -> a small named :class:`EdgeRestoreNet`, as a
task of the one training loop (:func:`restorekit.training.loop.run_training`).

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

Checkpoints ``<out>.ckpt.pt`` (the loop's) also hold the validation history and the int8
activation ranges of the QAT phase. Outputs: ``out`` (.safetensors, EdgeRestoreNet
metadata + distillation metadata, byte-reproducible) and a model card ``out.with_suffix('.md')``.

``qat``: after the float steps, ``qat_steps`` (default 10 % of ``steps``) more steps train through
the int8 model ONNX Runtime will run (:func:`int8_simulation`: the w8a8 simulation of
:mod:`restorekit.quantize.finetune`, per-channel symmetric int8 weights, uint8 activations where
the QDQ model quantizes them, straight-through gradients), at ``QAT_LR_FRACTION`` of the learning
rate. The activation ranges are observed once, on entering the phase, on ``QAT_CALIBRATION_CROPS``
fixed training crops, and kept; the metadata records them (``int8_activation_ranges``, the
format of ``Recipe.activation_ranges``). The saved weights are the float ones.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.files import atomic_write_text
from restorekit.core.metrics import psnr_from_mse
from restorekit.training.data import degrade, holdout_count, image_folders, load_training_images, sample_pair  # noqa: F401
from restorekit.training.loop import Phase, TrainingTask, resolve_device, run_training, to_nchw
from restorekit.training.workers import SampleWorkers, default_workers

CHECKPOINT_FORMAT = "restorekit-distill-checkpoint/1"
DEGRADATIONS = ("second-order", "classic")
VAL_TAG = 2**32 - 1  # seed-sequence word of the validation crops (a training step never reaches it)
QAT_CALIBRATION_TAG = 2**32 - 4  # ... of the crops the QAT phase observes its ranges on (pool.py: -2, -3)
QAT_CALIBRATION_CROPS = 16
QAT_LR_FRACTION = 0.05  # QAT fine-tune: cosine from 5 % of the base learning rate
INT8_SIMULATION = "onnxruntime-qdq-w8a8"  # what the QAT phase simulates (a checkpoint setting)
SAMPLE_STEPS_AHEAD = 2  # steps whose samples the workers make ahead of the one training
POOL_DEFAULTS = {"pool_size": 0, "pool_refresh": 0}  # a checkpoint without these keys trained on fresh samples


# --------------------------------------------------------------------------------------------
# Data: one sample is a pure function of (seed, step, index)
# --------------------------------------------------------------------------------------------


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


def qat_calibration_set(images: Sequence[np.ndarray], seed: int, patch_size: int, scale: int,
                        degradation: str) -> list[np.ndarray]:
    """The LR training crops (1x3xPxP float32 each) the QAT phase observes its activation ranges on."""
    return [np.ascontiguousarray(sample_pair(images, np.random.default_rng([int(seed), QAT_CALIBRATION_TAG, i]),
                                             patch_size, scale, degradation)[0].transpose(2, 0, 1)[None])
            for i in range(QAT_CALIBRATION_CROPS)]


# --------------------------------------------------------------------------------------------
# Losses, metrics, int8 simulation
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


def batch_psnr(a, b) -> float:
    """Mean over the batch of per-image PSNR (dB, peak 1) of two NCHW tensors."""
    mse = ((a.float() - b.float()) ** 2).flatten(1).mean(1)
    return float(np.mean([psnr_from_mse(m) for m in mse.tolist()]))


def int8_simulation(student, tiles: list[np.ndarray]):
    """``with int8_simulation(student, tiles) as fq: fq(x)`` runs an EdgeRestoreNet ``student`` the
    way its w8a8 ONNX model computes it, with activation ranges observed on ``tiles`` (1x3xHxW
    float32 arrays) and kept fixed; the clamped image output is quantized over [0, 1]."""
    from restorekit.quantize.finetune import w8a8_simulation

    return w8a8_simulation(student, tiles, learn_ranges=False, output_range=(0.0, 1.0))


class _Int8Phase:
    """The QAT phase's simulation of ``student``, built on first use from the calibration crops."""

    def __init__(self, student, calibration):
        self.student, self.calibration, self.sim = student, calibration, None

    def simulation(self):
        """The simulation (observing the ranges on the current weights the first time)."""
        if self.sim is None:
            self.sim = int8_simulation(self.student, self.calibration())
        return self.sim

    def state(self) -> dict:
        """The activation ranges, once observed (``{}`` before)."""
        return {} if self.sim is None else self.sim.activation_ranges()

    def load(self, ranges: dict) -> None:
        """Take the ranges back from a checkpoint."""
        if ranges:
            self.simulation().use_activation_ranges(ranges)


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


@dataclass
class DistillConfig:
    """A run's training settings (:func:`distill`'s arguments of the same names)."""

    steps: int
    seed: int = 0
    batch_size: int = 8
    patch_size: int = 64
    lr: float = 2e-3
    degradation: str = "second-order"
    gt_weight: float = 0.0
    edge_weight: float = 0.0
    val_every: int = 250
    val_crops: int = 16
    qat: bool = False
    qat_steps: int | None = None
    pool_size: int = 0
    pool_refresh: int = 1
    workers: int | None = None  # sample worker processes (None: cores less one on CUDA, 0 on CPU); not a training setting

    @property
    def n_qat(self) -> int:
        """QAT steps after the float ones (default 10 % of them when ``qat``)."""
        if not self.qat:
            return 0
        return max(1, self.steps // 10) if self.qat_steps is None else int(self.qat_steps)

    def check(self, out, checkpoint_every: int, world_size: int) -> Path:
        """The output path, after rejecting every bad setting with :class:`BadInputError`."""
        from restorekit.core.files import check_writable_path

        out = Path(out)
        if out.suffix != ".safetensors":
            raise BadInputError(f"output must be a .safetensors file, got {out}")
        check_writable_path(out)
        if self.steps < 1:
            raise BadInputError(f"steps must be >= 1, got {self.steps}")
        if min(self.batch_size, self.val_every, self.val_crops, checkpoint_every) < 1 or self.patch_size < 4:
            raise BadInputError("batch_size, val_every, val_crops and checkpoint_every must be >= 1, patch_size >= 4")
        if self.degradation not in DEGRADATIONS:
            raise BadInputError(f"unknown degradation {self.degradation!r}: choose {' or '.join(DEGRADATIONS)}")
        if not 0.0 <= self.gt_weight <= 1.0 or self.edge_weight < 0:
            raise BadInputError(f"gt_weight must be in [0, 1] and edge_weight >= 0, got {self.gt_weight}, "
                                f"{self.edge_weight}")
        if self.qat_steps is not None and self.qat_steps < 0:
            raise BadInputError(f"qat_steps must be >= 0, got {self.qat_steps}")
        if self.batch_size % world_size:
            raise BadInputError(f"batch_size {self.batch_size} must be a multiple of the number of processes "
                                f"({world_size})")
        if self.workers is not None and self.workers < 0:
            raise BadInputError(f"workers must be >= 0 (0: samples made in the training process), got {self.workers}")
        if self.pool_size < 0 or (self.pool_size and not 1 <= self.pool_refresh <= self.pool_size):
            raise BadInputError(f"pool_size must be >= 0 and pool_refresh in [1, pool_size], got {self.pool_size}, "
                                f"{self.pool_refresh}")
        return out

    def settings(self) -> dict:
        """The training settings a checkpoint must match."""
        s = {"seed": int(self.seed), "batch_size": int(self.batch_size), "patch_size": int(self.patch_size),
             "lr": float(self.lr), "degradation": self.degradation, "gt_weight": float(self.gt_weight),
             "edge_weight": float(self.edge_weight), "steps": int(self.steps), "qat_steps": int(self.n_qat),
             "val_crops": int(self.val_crops), "pool_size": int(self.pool_size),
             "pool_refresh": int(self.pool_refresh) if self.pool_size else 0}
        return {**s, "int8_simulation": INT8_SIMULATION} if self.n_qat else s


def _dist_env() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def load_teacher(teacher_ref, scale: int, patch_size: int):
    """The teacher :class:`LoadedModel`, checked to be an RGB restoration net of ``scale`` whose
    size rule ``patch_size`` (an LR side) meets."""
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


class DistillTask(TrainingTask):
    """Distillation as a task of the training loop: batches of degraded crops labelled by the
    teacher (or drawn from a pool of labelled ones), the L1 loss, validation, the QAT phase."""

    kind = "distillation"
    checkpoint_format = CHECKPOINT_FORMAT
    setting_defaults = POOL_DEFAULTS

    def __init__(self, cfg: DistillConfig, teacher, spec, data, n_val: int, dev, rank: int = 0, world: int = 1):
        import torch

        from restorekit.models.students import build_student

        torch.manual_seed(int(cfg.seed))
        student = build_student(spec.name).to(dev)
        phases = [Phase("distill", cfg.steps, cfg.lr)] + ([Phase("qat", cfg.n_qat, cfg.lr * QAT_LR_FRACTION)]
                                                          if cfg.n_qat else [])
        settings = {"student": spec.name, "config": json.dumps(student.config, sort_keys=True),
                    "teacher_sha256": teacher.spec.checkpoint_sha256, "data_fingerprint": data.fingerprint,
                    "holdout": n_val, **cfg.settings()}
        record = {"data_rng": f"sample i of step s: numpy.random.default_rng([{int(cfg.seed)}, s, i])"}
        super().__init__(student, phases, settings, record)
        self.cfg, self.spec, self.tspec, self.data, self.dev = cfg, spec, teacher.spec, data, dev
        self.rank, self.world, self.main, self.log_every = rank, world, rank == 0, cfg.val_every
        self.scale = spec.scale
        self.train_images = data.images[: len(data.images) - n_val]
        self.n_val = n_val
        self.teacher = teacher.module.to(dev).eval().requires_grad_(False)
        self.wrapped = student
        if world > 1:
            from torch.nn.parallel import DistributedDataParallel

            self.wrapped = DistributedDataParallel(student, device_ids=[dev.index] if dev.type == "cuda" else None)
        self.use_amp = dev.type == "cuda"
        self.amp_dtype = torch.bfloat16 if self.use_amp and torch.cuda.is_bf16_supported() else torch.float16
        self.grad_scaling = self.use_amp and self.amp_dtype == torch.float16
        self.int8 = _Int8Phase(student, lambda: qat_calibration_set(self.train_images, cfg.seed, cfg.patch_size,
                                                                     self.scale, cfg.degradation))
        self.val_rows: list[dict] = []
        self.pool = None
        # default: workers feed a GPU; on a CPU the training already takes every core (benchmarks/distill_throughput.py)
        workers = cfg.workers if cfg.workers is not None else (default_workers(world) if dev.type == "cuda" else 0)
        self.samples = SampleWorkers(self.train_images, cfg.patch_size, self.scale, cfg.degradation, workers)
        if self.main:  # degraded crops of the held-out photos and the teacher's output
            lr_np, hr_np = validation_set(data.images[len(self.train_images):] or data.images, cfg.seed,
                                          cfg.val_crops, cfg.patch_size, self.scale, cfg.degradation)
            self.val_lr, self.val_hr = to_nchw(lr_np, dev), to_nchw(hr_np, dev)
            with torch.no_grad():
                self.val_t = torch.cat([self.teacher(c).clamp(0, 1) for c in self.val_lr.split(8)])

    def batch(self, step: int):
        """(LR input, target) of step ``step``: this rank's slice of the global batch."""
        import torch

        c = self.cfg
        if self.pool is not None:
            for ahead in range(step + 1, min(step + 1 + SAMPLE_STEPS_AHEAD, self.total_steps)):
                self.samples.ahead(self.pool.step_words(ahead))
            self.pool.advance(step)
            x, target, hr = self.pool.batch(step, c.batch_size, self.rank, self.world)
        else:
            for ahead in range(step + 1, min(step + 1 + SAMPLE_STEPS_AHEAD, self.total_steps)):
                self.samples.ahead(self.batch_words(ahead))
            pairs = self.samples.get(self.batch_words(step))
            x, hr = to_nchw(np.stack([p[0] for p in pairs]), self.dev), to_nchw(np.stack([p[1] for p in pairs]), self.dev)
            with torch.no_grad():
                target = self.teacher(x).clamp(0, 1)
        if c.gt_weight > 0:
            target = torch.lerp(target, hr, c.gt_weight)
        return x, target

    def batch_words(self, step: int) -> list[list[int]]:
        """The seed words of this rank's samples of step ``step`` (as :func:`distill_batch` draws them)."""
        per = self.cfg.batch_size // self.world
        return [[int(self.cfg.seed), int(step), i] for i in range(self.rank * per, (self.rank + 1) * per)]

    def loss(self, step: int, batch):
        """L1 (+ edges) of the student's output to the target: in the QAT phase through the int8
        simulation (float32), before it under autocast on CUDA."""
        import torch

        x, target = batch
        if step >= self.cfg.steps:
            with self.int8.simulation():
                pred = self.wrapped(x)
        else:
            with torch.autocast(self.dev.type, dtype=self.amp_dtype, enabled=self.use_amp):
                pred = self.wrapped(x)
        return distill_loss(pred.float(), target, self.cfg.edge_weight)

    def reduce(self, loss):
        """The mean loss over the processes."""
        if self.world > 1:
            import torch.distributed as dist

            dist.all_reduce(loss)
            loss = loss / self.world
        return loss

    def validate(self, step: int) -> dict:
        """Validation row at ``step``: PSNRs against the teacher (and the clean HR) on the held-out crops."""
        import torch
        from torch.nn import functional as F

        student, val_lr, val_t = self.model, self.val_lr, self.val_t
        student.eval()
        with torch.no_grad():
            pred = torch.cat([student(c) for c in val_lr.split(8)])
            bic = F.interpolate(val_lr, scale_factor=self.scale, mode="bicubic", align_corners=False).clamp(0, 1)
            row = {"step": int(step), "psnr_student": batch_psnr(pred, val_t), "psnr_bicubic": batch_psnr(bic, val_t),
                   "psnr_student_gt": batch_psnr(pred, self.val_hr), "psnr_teacher_gt": batch_psnr(val_t, self.val_hr)}
            if self.cfg.qat and step > self.cfg.steps:  # what the int8 model gives
                with self.int8.simulation() as fq:
                    row["psnr_fakequant"] = batch_psnr(torch.cat([fq(c) for c in val_lr.split(8)]), val_t)
        student.train()
        done = self.losses[self.val_rows[-1]["step"] if self.val_rows else 0 : step]
        row["loss"] = float(np.mean(done)) if done else None
        return row

    def before_steps(self, start: int, bar) -> None:
        """Validate the untrained student; fill the pool (as it is at ``start``)."""
        if self.main and start == 0 and not self.val_rows:
            self.val_rows.append(self.validate(0))
        if not self.cfg.pool_size or start >= self.total_steps:
            return
        from restorekit.training.pool import PairPool

        c = self.cfg

        def draw(words):
            """The pool sample of ``words``: (LR, HR), made ahead by the workers where there are some."""
            return self.samples.get([words])[0]

        self.pool = PairPool(draw, self.teacher, c.seed, c.pool_size, c.pool_refresh, self.dev, keep_hr=c.gt_weight > 0)
        self.samples.ahead(self.pool.fill_words(start))
        fill = bar.add_task("pool", total=c.pool_size, loss=float("nan"), status="", phase="pool")
        self.pool.fill(start, lambda n: bar.update(fill, completed=n))
        if not bar.disable:
            bar.console.print(f"pool filled: {c.pool_size} samples, {self.pool.nbytes / 2**20:.0f} MiB")

    def after_step(self, step: int) -> None:
        """Validate every ``val_every`` steps and at the end (rank 0)."""
        if self.main and (step % self.cfg.val_every == 0 or step == self.total_steps):
            self.val_rows.append(self.validate(step))

    def status(self) -> str:
        """The last validation: student and bicubic PSNR against the teacher."""
        if not self.val_rows:
            return "  val -"
        last = self.val_rows[-1]
        return f"  val {last['psnr_student']:.2f} dB (bicubic {last['psnr_bicubic']:.2f})"

    def state(self) -> dict:
        """Validation rows and the QAT phase's activation ranges."""
        return {"val": self.val_rows, "qat_state": self.int8.state()}

    def load_state(self, state: dict) -> None:
        """Take the validation rows and the activation ranges back."""
        self.val_rows = list(state["val"])
        self.int8.load(state.get("qat_state") or {})

    def intro(self, start: int, device) -> str:
        """What is distilled into what, on what, and the steps to run."""
        c, n_qat = self.cfg, self.cfg.n_qat
        return (f"distilling {self.tspec.name} ({self.tspec.architecture}) -> {self.spec.name} {self.model.config}: "
                f"{len(self.train_images)} training / {self.n_val} held-out images, {c.degradation}, batch "
                f"{c.batch_size} x {c.patch_size}px LR on {self.world} x {device}, steps {start}->{self.total_steps}"
                + (f" ({n_qat} QAT)" if n_qat else "")
                + (f", pool of {c.pool_size} teacher outputs ({c.pool_refresh} new per step)" if c.pool_size else ""))

    def metadata(self) -> dict[str, str]:
        """EdgeRestoreNet metadata, the run's provenance and settings, the final validation."""
        c, t = self.cfg, self.tspec
        if not self.val_rows or self.val_rows[-1]["step"] != self.total_steps:  # resumed after the end
            self.val_rows.append(self.validate(self.total_steps))
        final = self.val_rows[-1]
        meta = {
            "architecture": "EdgeRestoreNet", "task": t.task, "scale": str(self.scale),
            "config": json.dumps(self.model.config), "student": self.spec.name, "steps": str(c.steps),
            "seed": str(c.seed), "distill": CHECKPOINT_FORMAT.replace("-checkpoint", ""),
            "teacher": t.name, "teacher_architecture": t.architecture, "teacher_sha256": t.checkpoint_sha256,
            "data_fingerprint": self.data.fingerprint, "degradation": c.degradation,
            "batch_size": str(c.batch_size), "patch_size": str(c.patch_size), "lr": repr(float(c.lr)),
            "gt_weight": repr(float(c.gt_weight)), "edge_weight": repr(float(c.edge_weight)),
            "qat": "true" if c.qat else "false", "qat_steps": str(c.n_qat),
            "pool_size": str(c.pool_size), "pool_refresh": str(self.settings["pool_refresh"]),
            "val_psnr_student_db": f"{final['psnr_student']:.3f}",
            "val_psnr_bicubic_db": f"{final['psnr_bicubic']:.3f}",
        }
        if c.n_qat:
            meta["int8_activation_ranges"] = json.dumps(self.int8.simulation().activation_ranges(), sort_keys=True)
        return meta

    def finish(self, out: Path, seconds: float, loss: float) -> str:
        """Write the model card next to the weights."""
        card = out.with_suffix(".md")
        atomic_write_text(card, _model_card(out, self.spec, self.model, self.tspec, self.data, self.train_images,
                                            self.settings, self.world, self.dev, self.val_rows, self.cfg.qat))
        final = self.val_rows[-1]
        return (f"wrote {out} and {card} ({seconds:.0f} s): held-out PSNR vs teacher {final['psnr_student']:.2f} dB "
                f"(bicubic {final['psnr_bicubic']:.2f} dB)")


def _join_processes(dev, world: int, local_rank: int):
    """Join torchrun's process group when there are several processes: (whether this call
    created the group, this rank's device)."""
    import torch
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
    return own_group, dev


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
    workers: int | None = None,
) -> DistillResult:
    """Distil ``teacher_ref`` into the student ``student_name`` on photos from ``data_dirs``.

    ``patch_size`` is the LR side of a training crop, ``batch_size`` the global batch (split over
    ``torchrun`` processes). ``pool_size`` > 0 trains from a :class:`PairPool` of that many cached
    teacher outputs, ``pool_refresh`` of them replaced each step (0: fresh samples every step).
    ``workers`` processes make the degraded samples ahead of the steps (None: on CUDA the cores less
    one per training process, on a CPU none: training takes the cores there; 0: in the training
    process); the samples do not depend on it (:mod:`restorekit.training.workers`).
    Every bad input (unknown student, scale mismatch, empty data folder, ...) raises
    :class:`BadInputError` before training starts. See the module docstring.
    """
    import torch.distributed as dist

    from restorekit.models.students import student_spec

    cfg = DistillConfig(steps, seed, batch_size, patch_size, lr, degradation, gt_weight, edge_weight, val_every,
                        val_crops, qat, qat_steps, pool_size, pool_refresh, workers)
    rank, world, local_rank = _dist_env()
    out = cfg.check(out, checkpoint_every, world)
    dev = resolve_device(device)
    spec = student_spec(student_name)
    data = load_training_images(image_folders(data_dirs), min_size=patch_size * spec.scale)
    n_val = holdout_count(len(data.images), holdout)
    teacher = load_teacher(teacher_ref, spec.scale, patch_size)
    own_group, dev = _join_processes(dev, world, local_rank)
    try:
        task = DistillTask(cfg, teacher, spec, data, n_val, dev, rank, world)
        try:
            losses = run_training(task, out, resume, checkpoint_every, progress, dev)
        finally:
            task.samples.close()
        if world > 1:
            dist.barrier()
        return DistillResult(out=out, card=out.with_suffix(".md"), losses=losses, val=task.val_rows, world_size=world)
    finally:
        if own_group and dist.is_initialized():
            dist.destroy_process_group()


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
        + (f" + {settings['qat_steps']} QAT steps through the int8 ONNX model's computation (int8 weights per "
           "channel, uint8 activations)" if qat else "")
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
