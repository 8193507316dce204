"""Supervised training of restorekit's own networks on synthetically damaged photos: tasks of
the one training loop (:func:`restorekit.training.loop.run_training`).

``train_supervised`` loads every photo of the data folders once, cuts random HR patches (with
flips / 90-degree rotations), makes their LR inputs on the fly with
:func:`restorekit.degrade.synthetic.degrade_pair`, and trains :class:`EdgeRestoreNet` with an L1
loss. ``train_scratch_detector`` trains :class:`ScratchUNet` on the masks of synthetic damage.

Determinism: the model is initialised after ``torch.manual_seed(seed)`` and the batch of step
``i`` is drawn from ``np.random.default_rng([seed, i])`` alone. The loop keeps the resumable
checkpoint and writes the ``.safetensors`` result (see :mod:`restorekit.training.loop`).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.degrade.synthetic import DegradationConfig, degrade_pair
from restorekit.models.students import init_weights
from restorekit.training.data import augment, load_training_images, random_patch
from restorekit.training.loop import Phase, TrainingTask, run_training, to_nchw


def make_batch(
    images: Sequence[np.ndarray],
    seed: int,
    step: int,
    batch_size: int,
    patch_size: int,
    scale: int,
    degradation: DegradationConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The (LR, HR) batch of training step ``step``: NHWC float32 arrays, a pure function of
    ``(seed, step)`` and the images."""
    rng = np.random.default_rng([int(seed), int(step)])
    lrs, hrs = [], []
    for _ in range(batch_size):
        hr = augment(random_patch(images, rng, patch_size), rng)
        lrs.append(degrade_pair(hr, scale, rng, degradation))
        hrs.append(hr)
    return np.stack(lrs), np.stack(hrs)


class SupervisedTask(TrainingTask):
    """A net trained on (input, target) batches under a fixed loss, one learning rate throughout."""

    def __init__(self, model, make: Callable[[int], tuple[np.ndarray, np.ndarray]],
                 loss: Callable[[Any, Any, Any], Any], steps: int, seed: int, lr: float, settings: dict, metadata: dict[str, str], description: str):
        record = {"steps": int(steps), "lr": float(lr), "data_rng": f"numpy.random.default_rng([{int(seed)}, step])"}
        super().__init__(model, [Phase("train", int(steps), float(lr))], settings, record)
        self.make, self.loss_fn, self.seed = make, loss, int(seed)
        self.meta, self.description = metadata, description

    def batch(self, step: int):
        """The step's (input, target) NCHW tensors on the model's device."""
        dev = next(self.model.parameters()).device
        x, y = self.make(step)
        return to_nchw(x, dev), to_nchw(y, dev)

    def loss(self, step: int, batch):
        """The task's loss of the model on ``batch``."""
        return self.loss_fn(self.model, *batch)

    def metadata(self) -> dict[str, str]:
        """The task's metadata plus the net's config, the step count and the seed."""
        return {**self.meta, "config": json.dumps(self.model.config), "steps": str(self.total_steps),
                "seed": str(self.seed)}

    def intro(self, start: int, device) -> str:
        """``training <what>, <device>, steps <start>-><total>``."""
        return f"training {self.description}, {device}, steps {start}->{self.total_steps}"


def _run_settings(model, seed: int, batch_size: int, patch_size: int, fingerprint: str) -> dict:
    """What must match between a checkpoint and the run resuming from it."""
    return {
        "config": json.dumps(model.config, sort_keys=True),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "patch_size": int(patch_size),
        "data_fingerprint": fingerprint,
    }


def _check_run(out: Path, steps: int, batch_size: int, checkpoint_every: int) -> Path:
    """The output path, after checking the run's counts."""
    out = Path(out)
    if out.suffix != ".safetensors":
        raise BadInputError(f"output must be a .safetensors file, got {out}")
    if steps < 0:
        raise BadInputError(f"steps must be >= 0, got {steps}")
    if batch_size < 1 or checkpoint_every < 1:
        raise BadInputError("batch_size and checkpoint_every must be >= 1")
    return out


def train_supervised(
    data_dirs: list[Path],
    out: Path,
    steps: int,
    seed: int = 0,
    batch_size: int = 16,
    patch_size: int = 96,
    lr: float = 2e-3,
    model_kwargs: dict | None = None,
    exclude: Iterable[str] = (),
    resume: bool = True,
    checkpoint_every: int = 250,
    progress: bool = True,
    device: str | None = None,
    degradation: DegradationConfig | None = None,
) -> Path:
    """Train :class:`EdgeRestoreNet` on ``data_dirs`` and write its weights to ``out`` (.safetensors).

    ``patch_size`` is the HR patch side (a multiple of the model's scale); ``exclude`` lists file
    names never to train on (held-out images). Checkpoints go to ``out.with_suffix('.ckpt.pt')``
    every ``checkpoint_every`` steps, at the end, and on Ctrl-C; with ``resume`` a run continues
    from that file (it must come from the same data, seed, batch and patch size and net config).
    Returns ``out``.
    """
    import torch
    from torch.nn import functional as F

    from restorekit.models.edgenet import EdgeRestoreNet

    out = _check_run(out, steps, batch_size, checkpoint_every)
    torch.manual_seed(int(seed))
    model = EdgeRestoreNet(**dict(model_kwargs or {}))
    init_weights(model)
    if model.in_channels != 3:
        raise BadInputError(f"train_supervised trains RGB nets (in_channels=3), got {model.in_channels}")
    scale = model.scale
    if patch_size % scale or patch_size < 2 * scale:
        raise BadInputError(f"patch_size {patch_size} must be a multiple of the scale {scale} and >= {2 * scale}")

    data = load_training_images(data_dirs, exclude, min_size=patch_size)
    task = SupervisedTask(
        model,
        lambda step: make_batch(data.images, seed, step, batch_size, patch_size, scale, degradation),
        lambda m, x, y: F.l1_loss(m(x), y), steps, seed, lr,
        _run_settings(model, seed, batch_size, patch_size, data.fingerprint),
        {"architecture": "EdgeRestoreNet", "task": "restore", "scale": str(scale)},
        f"EdgeRestoreNet {model.config} on {len(data.images)} images, batch {batch_size}, patch {patch_size}",
    )
    task.log_every = checkpoint_every
    run_training(task, out, resume, checkpoint_every, progress, device)
    return out


#: Scanning after the damage (the detector must find scratches through blur, noise and JPEG).
SCAN_AFTER_DAMAGE = DegradationConfig(
    blur=dataclasses.replace(DegradationConfig().blur, prob=0.5, sigma=(0.2, 0.8)),
    noise=dataclasses.replace(DegradationConfig().noise, prob=0.5, sigma=(1.0 / 255, 8.0 / 255)),
    grain=dataclasses.replace(DegradationConfig().grain, prob=0.3),
    jpeg=dataclasses.replace(DegradationConfig().jpeg, prob=0.5, quality=(60, 95)),
)


def make_scratch_batch(images: Sequence[np.ndarray], seed: int, step: int, batch_size: int,
                       patch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(damaged photo, defect mask) batch of step ``step`` for the scratch detector: NHWC float32,
    a pure function of ``(seed, step)``. Each clean patch is aged (70 %), damaged by
    ``damage_photo`` (scratches, hairs, dust, stains, tears) and scanned (``SCAN_AFTER_DAMAGE``);
    the target is the mask of scratches, hairs, dust and tears (stains are not defects)."""
    from restorekit.degrade.damage import damage_photo
    from restorekit.degrade.synthetic import age_photo

    rng = np.random.default_rng([int(seed), int(step)])
    xs, ys = [], []
    for _ in range(batch_size):
        patch = augment(random_patch(images, rng, patch_size), rng)
        if rng.random() < 0.7:
            patch = age_photo(patch, rng)
        damaged = damage_photo(patch, rng)
        xs.append(degrade_pair(damaged.image, 1, rng, SCAN_AFTER_DAMAGE))
        ys.append(damaged.defects[:, :, None].astype(np.float32))
    return np.stack(xs), np.stack(ys)


def scratch_loss(model, x, y, pos_weight: float = 4.0):
    """Binary cross-entropy (positives weighted: defects are a few % of the pixels) + soft Dice."""
    import torch
    from torch.nn import functional as F

    logits = model.logits(x)
    bce = F.binary_cross_entropy_with_logits(logits, y, pos_weight=torch.tensor(pos_weight, device=x.device))
    p = torch.sigmoid(logits)
    dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
    return bce + dice


def train_scratch_detector(
    data_dirs: list[Path],
    out: Path,
    steps: int,
    seed: int = 0,
    batch_size: int = 8,
    patch_size: int = 128,
    lr: float = 2e-3,
    width: int = 16,
    exclude: Iterable[str] = (),
    resume: bool = True,
    checkpoint_every: int = 250,
    progress: bool = True,
    device: str | None = None,
) -> Path:
    """Train :class:`ScratchUNet` to find scratches, hairs, dust and tears, supervised by the
    masks of synthetic damage drawn on clean photos from ``data_dirs``; same loop, checkpoints
    and determinism as :func:`train_supervised`."""
    import torch

    from restorekit.models.unet import ScratchUNet

    out = _check_run(out, steps, batch_size, checkpoint_every)
    if patch_size % 4 or patch_size < 32:
        raise BadInputError(f"patch_size {patch_size} must be a multiple of 4 and >= 32")
    torch.manual_seed(int(seed))
    model = ScratchUNet(width=width)
    init_weights(model)
    data = load_training_images(data_dirs, exclude, min_size=patch_size)
    task = SupervisedTask(
        model, lambda step: make_scratch_batch(data.images, seed, step, batch_size, patch_size), scratch_loss,
        steps, seed, lr, _run_settings(model, seed, batch_size, patch_size, data.fingerprint),
        {"architecture": "ScratchUNet", "task": "scratch", "scale": "1"},
        f"ScratchUNet {model.config} on {len(data.images)} images, batch {batch_size}, patch {patch_size}",
    )
    task.log_every = checkpoint_every
    run_training(task, out, resume, checkpoint_every, progress, device)
    return out
