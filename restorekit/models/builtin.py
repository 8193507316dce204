"""restorekit's built-in default model: an :class:`EdgeRestoreNet` (2x restore + upscale)
trained by the project's own code (``scripts/train_builtin.py``; see docs/model-card.md).

Weights are stored as ``.safetensors`` whose metadata carries the architecture name and the
constructor config, so a file rebuilds its own net.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from restorekit.core.errors import BadInputError
from restorekit.models.edgenet import EdgeRestoreNet

BUILTIN_WEIGHTS = Path(__file__).parent / "weights" / "restorekit_x2.safetensors"
SCRATCH_WEIGHTS = Path(__file__).parent / "weights" / "scratch_unet.safetensors"  # scripts/train_scratch_detector.py
ARCHITECTURE = "EdgeRestoreNet"


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (empty dict when it has none)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as fh:
            return dict(fh.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for bad headers
        raise BadInputError(f"not a readable safetensors file: {path} ({exc})") from exc


def _student_classes() -> dict:
    from restorekit.models.unet import ScratchUNet

    return {"EdgeRestoreNet": EdgeRestoreNet, "ScratchUNet": ScratchUNet}


def load_student_safetensors(path: str | os.PathLike, architecture: str | None = None):
    """Build a restorekit student (EdgeRestoreNet, ScratchUNet) from a safetensors file written
    by restorekit's trainer (metadata ``architecture`` + ``config``) and load its weights
    strictly; ``architecture`` insists on one. Returned in eval mode."""
    from safetensors.torch import load_file

    path = Path(path)
    meta = read_safetensors_metadata(path)
    arch = meta.get("architecture")
    classes = _student_classes()
    if arch not in classes or (architecture is not None and arch != architecture):
        raise BadInputError(f"{path} holds architecture {arch!r}, not {architecture or ' or '.join(classes)}")
    try:
        config = json.loads(meta.get("config", "{}"))
        model = classes[arch](**config)
    except (ValueError, TypeError) as exc:
        raise BadInputError(f"{path}: bad {arch} config in metadata ({exc})") from exc
    try:
        model.load_state_dict(load_file(str(path)), strict=True)
    except RuntimeError as exc:
        raise BadInputError(f"{path}: weights do not match the config {config} ({exc})") from exc
    return model.eval()


def load_edgenet_safetensors(path: str | os.PathLike) -> EdgeRestoreNet:
    """An :class:`EdgeRestoreNet` from a safetensors file written by ``train_supervised``."""
    return load_student_safetensors(path, ARCHITECTURE)


def load_builtin() -> EdgeRestoreNet:
    """The built-in default model (eval mode, CPU)."""
    if not BUILTIN_WEIGHTS.is_file():
        raise BadInputError(f"built-in weights missing from the installation: {BUILTIN_WEIGHTS}")
    return load_edgenet_safetensors(BUILTIN_WEIGHTS)
