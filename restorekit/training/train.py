"""Supervised training of restorekit's own network on synthetically degraded photos.

``train_supervised`` loads every photo of the data folders once, cuts random HR patches (with
flips / 90-degree rotations), makes their LR inputs on the fly with
:func:`restorekit.degrade.synthetic.degrade_pair`, and trains :class:`EdgeRestoreNet` with an L1
loss and Adam under a cosine learning-rate decay.

Determinism: the model is initialised after ``torch.manual_seed(seed)`` and the batch of step
``i`` is drawn from ``np.random.default_rng([seed, i])`` alone, so a run is reproducible and a
resumed run sees exactly the batches an uninterrupted one would have seen.

Checkpoints (``<out>.ckpt.pt``, a ``torch.save`` dict of tensors and plain values, read back with
``weights_only=True``) hold the model, the optimizer, the step and the RNG state; a run resumes
from one when present. The result is a ``.safetensors`` file whose metadata rebuilds the net
(see :func:`restorekit.models.builtin.load_edgenet_safetensors`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from typing import Any
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.degrade.synthetic import DegradationConfig, degrade_pair
from restorekit.core.errors import BadInputError
from restorekit.core.image import list_images, read_image
from restorekit.models.students import init_weights

CHECKPOINT_FORMAT = "restorekit-train-checkpoint/1"
MIN_LR_FRACTION = 0.01  # the cosine decay ends at 1% of the initial learning rate
WARMUP_FRACTION = 0.02  # linear warm-up over the first 2% of the steps (at most 200)


@dataclass
class TrainingImages:
    """The decoded training photos (HxWx3 float32 RGB) and where they came from."""

    images: list[np.ndarray]
    paths: list[Path]
    fingerprint: str  # sha256 over the files' own sha256s, in load order
    skipped: list[str]  # "name (reason)" for files left out


def checkpoint_path(out: Path) -> Path:
    """Where ``train_supervised(out=...)`` keeps its resumable checkpoint."""
    return Path(out).with_suffix(".ckpt.pt")


def load_training_images(
    data_dirs: Sequence[str | os.PathLike], exclude: Iterable[str] = (), min_size: int = 1
) -> TrainingImages:
    """Decode every image directly inside ``data_dirs`` (sorted, in folder order).

    Files whose name is in ``exclude`` are skipped (in every folder), so are images smaller than
    ``min_size`` on a side and byte-identical duplicates (the same photo in two folders is
    loaded once). Raises :class:`BadInputError` when a folder is missing or nothing is left.
    """
    if not data_dirs:
        raise BadInputError("no training data folder given")
    excluded = set(exclude)
    images: list[np.ndarray] = []
    paths: list[Path] = []
    skipped: list[str] = []
    seen: set[str] = set()
    digests: list[str] = []
    for folder in data_dirs:
        folder = Path(folder)
        if not folder.is_dir():
            raise BadInputError(f"training data folder not found: {folder}")
        files = list_images(folder)
        if not files:
            raise BadInputError(f"training data folder has no images: {folder}")
        for path in files:
            if path.name in excluded:
                skipped.append(f"{path} (excluded)")
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                skipped.append(f"{path} (duplicate)")
                continue
            photo = read_image(path)
            if min(photo.size) < min_size:
                skipped.append(f"{path} (smaller than {min_size} px)")
                continue
            seen.add(digest)
            digests.append(digest)
            images.append(photo.rgb)
            paths.append(path)
    if not images:
        names = ", ".join(str(Path(d)) for d in data_dirs)
        raise BadInputError(f"no usable training image (at least {min_size}x{min_size} px, not excluded) in: {names}")
    fingerprint = hashlib.sha256("".join(digests).encode()).hexdigest()
    return TrainingImages(images=images, paths=paths, fingerprint=fingerprint, skipped=skipped)


def _augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip and rotation by a multiple of 90 degrees (all 8 symmetries)."""
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = np.rot90(patch, int(rng.integers(4)))
    return np.ascontiguousarray(patch)


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
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        y = int(rng.integers(h - patch_size + 1))
        x = int(rng.integers(w - patch_size + 1))
        hr = _augment(img[y : y + patch_size, x : x + patch_size], rng)
        lrs.append(degrade_pair(hr, scale, rng, degradation))
        hrs.append(hr)
    return np.stack(lrs), np.stack(hrs)


def learning_rate(step: int, steps: int, base_lr: float) -> float:
    """Short linear warm-up, then cosine decay to ``MIN_LR_FRACTION * base_lr`` at the end."""
    warmup = min(200, int(WARMUP_FRACTION * steps))
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    t = min(max(step / max(steps, 1), 0.0), 1.0)
    return ramp * base_lr * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * t)))


def _atomic_save(path: Path, writer) -> None:
    """Call ``writer(tmp_path)`` then rename over ``path``: never a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=str(path.parent))
    os.close(fd)
    try:
        writer(tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes 0600; a weights file is meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def safetensors_bytes(tensors: dict, metadata: dict[str, str]) -> bytes:
    """A safetensors file as bytes, byte-for-byte reproducible.

    ``safetensors`` writes the metadata entries in a random (hash map) order, so the same weights
    would get a different sha256 on every save. Re-serialise the JSON header with sorted keys
    (tensor data and offsets are unchanged; the header stays space-padded to 8 bytes).
    """
    from safetensors.torch import save

    raw = save(tensors, metadata=metadata)
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    text = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + raw[8 + n :]


def _run_settings(model, seed: int, batch_size: int, patch_size: int, fingerprint: str) -> dict:
    """What must match between a checkpoint and the run resuming from it."""
    return {
        "config": json.dumps(model.config, sort_keys=True),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "patch_size": int(patch_size),
        "data_fingerprint": fingerprint,
    }


@dataclass
class TrainingTask:
    """What a run learns: the net, the batch of each step, the loss, and the weights' metadata.

    ``make_batch(step) -> (x, y)`` returns NHWC float32 arrays and must be a pure function of
    the step (so resuming is exact); ``loss(model, x, y)`` takes NCHW tensors.
    """

    model: Any
    make_batch: Callable[[int], tuple[np.ndarray, np.ndarray]]
    loss: Callable[[Any, Any, Any], Any]
    metadata: dict[str, str]
    description: str


def run_training(task: TrainingTask, out: Path, steps: int, seed: int, lr: float, settings: dict,
                 resume: bool = True, checkpoint_every: int = 250, progress: bool = True,
                 device: str | None = None) -> Path:
    """The training loop shared by every student: Adam with warm-up + cosine decay, resumable
    checkpoints next to ``out`` (every ``checkpoint_every`` steps, at the end, on Ctrl-C), a
    progress bar, and a byte-reproducible ``.safetensors`` at the end."""
    import torch

    model = task.model
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model.to(dev)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    ckpt = checkpoint_path(out)
    start = 0
    if resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise BadInputError(f"not a restorekit training checkpoint: {ckpt}")
        differs = [k for k, v in settings.items() if state.get(k) != v]
        if differs:
            raise BadInputError(
                f"checkpoint {ckpt} was made with different {', '.join(differs)}: delete it or pass resume=False"
            )
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"].cpu())
        start = int(state["step"])

    def save_checkpoint(step: int) -> None:
        payload = {
            "format": CHECKPOINT_FORMAT,
            **settings,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "step": int(step),
            "steps": int(steps),
            "lr": float(lr),
            "torch_rng": torch.get_rng_state(),
            # The data RNG needs no state: step i draws from np.random.default_rng([seed, i]).
            "data_rng": f"numpy.random.default_rng([{int(seed)}, step])",
        }
        _atomic_save(ckpt, lambda tmp: torch.save(payload, tmp))

    from rich.console import Console
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    console = Console(stderr=True)
    if progress:
        console.print(f"training {task.description}, {dev}, steps {start}->{steps}")
    bar = Progress(
        TextColumn("[bold]train"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        disable=not progress,
    )
    model.train()
    step = start
    ema = float("nan")
    t0 = time.perf_counter()
    try:
        with bar:
            bar_task = bar.add_task("train", total=steps, completed=min(start, steps), loss=float("nan"))
            while step < steps:
                x_np, y_np = task.make_batch(step)
                x = torch.from_numpy(x_np).permute(0, 3, 1, 2).contiguous().to(dev)
                y = torch.from_numpy(y_np).permute(0, 3, 1, 2).contiguous().to(dev)
                for group in optimizer.param_groups:
                    group["lr"] = learning_rate(step, steps, lr)
                loss = task.loss(model, x, y)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                step += 1
                value = float(loss.detach())
                ema = value if math.isnan(ema) else 0.98 * ema + 0.02 * value
                bar.update(bar_task, completed=step, loss=ema)
                if step % checkpoint_every == 0 and step < steps:
                    save_checkpoint(step)
                    if progress and not console.is_terminal:  # a log line when nobody sees the bar
                        rate = (step - start) / (time.perf_counter() - t0)
                        console.print(f"step {step}/{steps} loss {ema:.4f} ({rate:.2f} steps/s)")
    except KeyboardInterrupt:
        save_checkpoint(step)
        raise
    save_checkpoint(step)

    model.eval()
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    metadata = {**task.metadata, "config": json.dumps(model.config), "steps": str(steps), "seed": str(seed)}
    payload = safetensors_bytes(tensors, metadata)
    _atomic_save(out, lambda tmp: Path(tmp).write_bytes(payload))
    if progress:
        console.print(f"wrote {out} ({time.perf_counter() - t0:.0f} s, final loss {ema:.4f})")
    return out


def _check_run(out: Path, steps: int, batch_size: int, checkpoint_every: int) -> Path:
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
    kwargs = dict(model_kwargs or {})
    torch.manual_seed(int(seed))
    model = EdgeRestoreNet(**kwargs)
    init_weights(model)
    if model.in_channels != 3:
        raise BadInputError(f"train_supervised trains RGB nets (in_channels=3), got {model.in_channels}")
    scale = model.scale
    if patch_size % scale or patch_size < 2 * scale:
        raise BadInputError(f"patch_size {patch_size} must be a multiple of the scale {scale} and >= {2 * scale}")

    data = load_training_images(data_dirs, exclude, min_size=patch_size)
    task = TrainingTask(
        model=model,
        make_batch=lambda step: make_batch(data.images, seed, step, batch_size, patch_size, scale, degradation),
        loss=lambda m, x, y: F.l1_loss(m(x), y),
        metadata={"architecture": "EdgeRestoreNet", "task": "restore", "scale": str(scale)},
        description=(f"EdgeRestoreNet {model.config} on {len(data.images)} images, "
                     f"batch {batch_size}, patch {patch_size}"),
    )
    settings = _run_settings(model, seed, batch_size, patch_size, data.fingerprint)
    return run_training(task, out, steps, seed, lr, settings, resume, checkpoint_every, progress, device)


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
        img = images[int(rng.integers(len(images)))]
        h, w = img.shape[:2]
        y = int(rng.integers(h - patch_size + 1))
        x = int(rng.integers(w - patch_size + 1))
        patch = _augment(img[y : y + patch_size, x : x + patch_size], rng)
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
    task = TrainingTask(
        model=model,
        make_batch=lambda step: make_scratch_batch(data.images, seed, step, batch_size, patch_size),
        loss=scratch_loss,
        metadata={"architecture": "ScratchUNet", "task": "scratch", "scale": "1"},
        description=f"ScratchUNet {model.config} on {len(data.images)} images, batch {batch_size}, patch {patch_size}",
    )
    settings = _run_settings(model, seed, batch_size, patch_size, data.fingerprint)
    return run_training(task, out, steps, seed, lr, settings, resume, checkpoint_every, progress, device)
