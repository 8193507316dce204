"""The one training loop: supervised training and distillation are tasks of it.

:func:`run_training` trains a :class:`TrainingTask` (its net, the batch of each step, the loss)
with Adam under the learning-rate schedule of the task's :class:`Phase` s (each: a short linear
warm-up, then cosine decay to ``MIN_LR_FRACTION`` of its learning rate), with a progress bar.

Determinism: a task's batch of step ``i`` is a pure function of ``i`` (and the task's seed), so
a resumed run sees exactly the batches an uninterrupted one would have seen.

Checkpoints (``<out>.ckpt.pt``, a ``torch.save`` dict of tensors and plain values, read back with
``weights_only=True``) hold the task's settings, the model, the optimizer, the gradient scaler,
the step, the loss of every step, the torch RNG state and the task's own state. They are written
every ``checkpoint_every`` steps, at the end and on Ctrl-C; a run resumes from one made with the
same settings. The result is a byte-reproducible ``.safetensors`` file whose metadata rebuilds
the net (see :func:`restorekit.models.builtin.load_student_safetensors`).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.files import atomic_write, atomic_write_bytes

CHECKPOINT_FORMAT = "restorekit-train-checkpoint/1"  # a supervised task's checkpoints
MIN_LR_FRACTION = 0.01  # the cosine decay ends at 1% of the initial learning rate
WARMUP_FRACTION = 0.02  # linear warm-up over the first 2% of the steps (at most 200)


def checkpoint_path(out: str | Path) -> Path:
    """Where a run writing ``out`` keeps its resumable checkpoint."""
    return Path(out).with_suffix(".ckpt.pt")


def learning_rate(step: int, steps: int, base_lr: float) -> float:
    """Short linear warm-up, then cosine decay to ``MIN_LR_FRACTION * base_lr`` at the end."""
    warmup = min(200, int(WARMUP_FRACTION * steps))
    ramp = min(1.0, (step + 1) / warmup) if warmup > 0 else 1.0
    t = min(max(step / max(steps, 1), 0.0), 1.0)
    return base_lr * (ramp * (MIN_LR_FRACTION + (1.0 - MIN_LR_FRACTION) * 0.5 * (1.0 + math.cos(math.pi * t))))


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


def save_weights(model, out: Path, metadata: dict[str, str]) -> None:
    """Write ``model``'s weights and ``metadata`` to the ``.safetensors`` file ``out``, atomically."""
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out, safetensors_bytes(tensors, metadata))


def to_nchw(batch: np.ndarray, device):
    """An NHWC numpy batch as a contiguous NCHW tensor on ``device``."""
    import torch

    return torch.from_numpy(np.ascontiguousarray(batch)).permute(0, 3, 1, 2).contiguous().to(device)


def resolve_device(device=None):
    """The torch device ``device`` names (None or "auto": CUDA when present, else the CPU);
    :class:`BadInputError` for an unknown name or a GPU this machine lacks."""
    import torch

    if device is None or device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise BadInputError(f"unknown device {device!r}") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"device {device!r} asked for but CUDA is not available here")
    return dev


@dataclass(frozen=True)
class Phase:
    """Consecutive steps under one schedule: warm-up + cosine decay from ``lr`` over ``steps``."""

    name: str
    steps: int
    lr: float


class TrainingTask:
    """What :func:`run_training` trains: the net, the batch and the loss of each step, the
    schedule, what a checkpoint must match, and the weights file's metadata.

    A task overrides :meth:`batch`, :meth:`loss`, :meth:`metadata` and :meth:`intro`; the other
    hooks do nothing by default.
    """

    kind = "training"  # "not a restorekit <kind> checkpoint"
    checkpoint_format = CHECKPOINT_FORMAT
    setting_defaults: dict[str, Any] = {}  # the value of a setting that an older checkpoint lacks
    grad_scaling = False  # scale the loss (torch.amp.GradScaler) for fp16 autocast
    main = True  # this process writes the files and prints
    log_every = 250  # a log line every this many steps when the bar is not on a terminal

    def __init__(self, model, phases: list[Phase], settings: dict[str, Any], record: dict[str, Any] | None = None):
        self.model = model  # the module trained, checkpointed and saved
        self.phases = phases  # consecutive
        self.settings = settings  # stored in checkpoints; a run resumes only from one with the same
        self.record = dict(record or {})  # stored in checkpoints, not compared
        self.losses: list[float] = []  # every step's loss so far (the loop keeps it)

    @property
    def total_steps(self) -> int:
        """Steps of all the phases."""
        return sum(p.steps for p in self.phases)

    def phase_at(self, step: int) -> tuple[Phase, int]:
        """The phase step ``step`` belongs to, and that phase's first step."""
        first = 0
        for phase in self.phases:
            if step < first + phase.steps:
                return phase, first
            first += phase.steps
        return self.phases[-1], first - self.phases[-1].steps

    def parameters(self):
        """What the optimizer trains (default: the model's parameters)."""
        return self.model.parameters()

    def batch(self, step: int) -> Any:
        """The batch of step ``step``: a pure function of the step."""
        raise NotImplementedError

    def loss(self, step: int, batch: Any):
        """The scalar loss tensor of step ``step`` on ``batch``."""
        raise NotImplementedError

    def metadata(self) -> dict[str, str]:
        """The weights file's metadata, asked for once the steps are done (rank 0 only)."""
        raise NotImplementedError

    def intro(self, start: int, device) -> str:
        """The line printed before the first step."""
        raise NotImplementedError

    def finish(self, out: Path, seconds: float, loss: float) -> str:
        """Write what else the run produces (rank 0, after the weights); return the closing line."""
        return f"wrote {out} ({seconds:.0f} s, final loss {loss:.4f})"

    def state(self) -> dict[str, Any]:
        """The task's own entries in a checkpoint."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Take the task's own entries back from a checkpoint."""

    def before_steps(self, start: int, bar) -> None:
        """Called once before the first step to run (``bar``: the rich progress display)."""

    def after_step(self, step: int) -> None:
        """Called after each step (``step`` steps are done)."""

    def status(self) -> str:
        """Text after the loss in the progress bar and the log lines."""
        return ""

    def reduce(self, loss):
        """The loss value every process reports (the mean over processes when there are several)."""
        return loss


def _load_checkpoint(task: TrainingTask, optimizer, scaler, ckpt: Path, dev) -> int:
    """Restore a run from ``ckpt``; returns the step it reached."""
    import torch

    state = torch.load(ckpt, map_location=dev, weights_only=True)
    if state.get("format") != task.checkpoint_format:
        raise BadInputError(f"not a restorekit {task.kind} checkpoint: {ckpt}")
    differs = [k for k, v in task.settings.items() if state.get(k, task.setting_defaults.get(k)) != v]
    if differs:
        raise BadInputError(f"checkpoint {ckpt} was made with different {', '.join(differs)}: "
                            "delete it or pass resume=False")
    task.model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    if state.get("scaler"):
        scaler.load_state_dict(state["scaler"])
    task.losses = [float(v) for v in state.get("losses", [])]
    task.load_state(state)
    torch.set_rng_state(state["torch_rng"].cpu())
    return int(state["step"])


def _save_checkpoint(task: TrainingTask, optimizer, scaler, ckpt: Path, step: int) -> None:
    """Write the run's state at ``step`` to ``ckpt`` (rank 0 only)."""
    import torch

    if not task.main:
        return
    payload = {
        "format": task.checkpoint_format, **task.settings, **task.record,
        "model": task.model.state_dict(), "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict(),
        "step": int(step), "losses": torch.tensor(task.losses, dtype=torch.float64), "torch_rng": torch.get_rng_state(),
        **task.state(),
    }
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(ckpt, lambda fh: torch.save(payload, fh))


def _train_step(task: TrainingTask, optimizer, scaler, step: int) -> float:
    """Run step ``step``: batch, scheduled learning rate, loss, backward, update; the loss value."""
    batch = task.batch(step)
    phase, first = task.phase_at(step)
    for group in optimizer.param_groups:
        group["lr"] = learning_rate(step - first, phase.steps, phase.lr)
    loss = task.loss(step, batch)
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    return float(task.reduce(loss.detach()))


def _progress_bar(console, show: bool):
    from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    return Progress(TextColumn("[bold]{task.fields[phase]}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("loss {task.fields[loss]:.4f}{task.fields[status]}"), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not show)


def run_training(task: TrainingTask, out: str | Path, resume: bool = True, checkpoint_every: int = 250,
                 progress: bool = True, device=None) -> list[float]:
    """Train ``task`` and write its weights to ``out`` (.safetensors, rank 0); returns every step's loss.

    With ``resume``, a run continues from ``out``'s checkpoint when there is one (made with the
    same settings, else :class:`BadInputError`). See the module docstring.
    """
    import torch
    from rich.console import Console

    out, dev = Path(out), resolve_device(device)
    task.model.to(dev)
    optimizer = torch.optim.Adam(task.parameters(), lr=task.phases[0].lr)
    scaler = torch.amp.GradScaler("cuda", enabled=task.grad_scaling)
    ckpt = checkpoint_path(out)
    start = _load_checkpoint(task, optimizer, scaler, ckpt, dev) if resume and ckpt.exists() else 0
    console = Console(stderr=True)
    show = progress and task.main
    if show:
        console.print(task.intro(start, dev))
    total, step, ema, t0 = task.total_steps, start, float("nan"), time.perf_counter()
    bar = _progress_bar(console, show)
    task.model.train()
    try:
        with bar:
            task.before_steps(start, bar)
            bar_task = bar.add_task("train", total=total, completed=min(start, total), loss=float("nan"),
                                    status=task.status(), phase=task.phase_at(min(start, total - 1))[0].name)
            while step < total:
                task.losses.append(_train_step(task, optimizer, scaler, step))
                step += 1
                ema = task.losses[-1] if math.isnan(ema) else 0.98 * ema + 0.02 * task.losses[-1]
                task.after_step(step)
                if show and not console.is_terminal and (step % task.log_every == 0 or step == total):
                    rate = (step - start) / (time.perf_counter() - t0)
                    console.print(f"step {step}/{total} loss {ema:.4f} ({rate:.2f} steps/s){task.status()}")
                bar.update(bar_task, completed=step, loss=ema, status=task.status(),
                           phase=task.phase_at(step - 1)[0].name)
                if step % checkpoint_every == 0 and step < total:
                    _save_checkpoint(task, optimizer, scaler, ckpt, step)
    except KeyboardInterrupt:
        _save_checkpoint(task, optimizer, scaler, ckpt, step)
        raise
    _save_checkpoint(task, optimizer, scaler, ckpt, step)
    task.model.eval()
    if task.main:
        save_weights(task.model, out, task.metadata())
        line = task.finish(out, time.perf_counter() - t0, ema)
        if show:
            console.print(line)
    return task.losses
