"""Load any supported checkpoint into an nn.Module + ModelSpec, safely.

Never unpickles arbitrary objects: ``.safetensors`` through safetensors, everything else through
``torch.load(weights_only=True)``. Architectures are detected by spandrel from the state dict
(restorekit's own networks are recognised from their safetensors metadata).
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from restorekit.core.errors import BadInputError
from restorekit.core.files import sha256_file
from restorekit.models.io import FACE_CALL_KWARGS, FACE_SIZE, ColorizerIO, FaceNetIO, MaskedInput
from restorekit.models.spec import ModelSpec

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".ckpt", ".safetensors", ".bin")
WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g", "g_ema")
DEFAULT_MODEL = "default"
BUILTIN_NAME = "restorekit-x2"  # bundle directory name of the built-in model

COLORIZER_MULTIPLE_OF = 32  # DDColor's ConvNeXt encoder downsamples 32x

# spandrel's purpose -> our task names
_PURPOSE_TASK = {"SR": "sr", "Restoration": "restore", "FaceSR": "face", "Inpaint": "inpaint",
                 "Inpainting": "inpaint"}


@dataclass
class LoadedModel:
    """A model ready for export: eval-mode module (fp32, CPU) and its spec."""

    module: nn.Module
    spec: ModelSpec


def count_macs(module: nn.Module, in_channels: int = 3, size: int = 64) -> float:
    """Multiply-accumulates per megapixel of input, counted over Conv/ConvTranspose/Linear layers."""
    total = 0

    def hook(mod, inp, out):
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            total += mod.weight.numel() * out.shape[2] * out.shape[3] * out.shape[0]
        elif isinstance(mod, nn.ConvTranspose2d):
            total += mod.weight.numel() * inp[0].shape[2] * inp[0].shape[3] * out.shape[0]
        elif isinstance(mod, nn.Linear):
            total += mod.in_features * mod.out_features * (out.numel() // mod.out_features)

    handles = [m.register_forward_hook(hook) for m in module.modules()
               if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear))]
    try:
        with torch.inference_mode():
            module(torch.rand(1, in_channels, size, size))
    finally:
        for h in handles:
            h.remove()
    return total * (1e6 / (size * size))


def _load_refusal(exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused a file, in a few words. torch's own message
    opens with advice to retry with ``weights_only=False`` (which would run the file's code): the
    reason is the part after ``WeightsUnpickler error:``."""
    if isinstance(exc, (KeyError, IndexError)):
        return f"unreadable pickle stream ({type(exc).__name__})"
    text = str(exc).strip()
    if "WeightsUnpickler error:" in text:
        text = text.split("WeightsUnpickler error:", 1)[1].split("Check the documentation", 1)[0]
    text = " ".join(text.split())
    return text[:160] or type(exc).__name__


def read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and (safetensors) metadata of a checkpoint; unwraps params/params_ema/state_dict."""
    if path.suffix.lower() == ".safetensors":
        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="pt") as fh:
                meta = fh.metadata() or {}
                sd = {k: fh.get_tensor(k) for k in fh.keys()}
        except (SafetensorError, OSError, ValueError) as exc:
            raise BadInputError(f"not a valid safetensors file: {path} ({exc})") from exc
        return sd, meta
    try:
        with warnings.catch_warnings():  # torch warns of any pickle protocol above 2: not the user's concern
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only=True executes nothing: any failure means "not a weights file"
        raise BadInputError(
            f"not a loadable weights file: {path} (refused by torch.load(weights_only=True): {_load_refusal(exc)})"
        ) from exc
    for _ in range(3):
        if isinstance(obj, dict):
            inner = next((obj[k] for k in WRAPPER_KEYS if k in obj and isinstance(obj[k], dict)), None)
            if inner is not None and not any(isinstance(v, torch.Tensor) for v in obj.values()):
                obj = inner
                continue
        break
    if not isinstance(obj, dict) or not any(isinstance(v, torch.Tensor) for v in obj.values()):
        raise BadInputError(f"no state dict of tensors found in {path}")
    return {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}, {}


def _from_spandrel(sd: dict[str, torch.Tensor], path: Path) -> tuple[nn.Module, ModelSpec]:
    import spandrel

    try:
        import spandrel_extra_arches

        spandrel_extra_arches.install(ignore_duplicates=True)
    except ImportError:  # pragma: no cover - optional
        pass
    try:
        desc = spandrel.ModelLoader().load_from_state_dict(sd)
    except spandrel.UnsupportedModelError as exc:
        keys = ", ".join(list(sd)[:4])
        raise BadInputError(
            f"unsupported architecture in {path.name}: no known restoration network matches its keys ({keys}, ...)"
        ) from exc
    except Exception as exc:
        raise BadInputError(f"could not build a model from {path.name}: {str(exc).splitlines()[0][:200]}") from exc
    arch = desc.architecture.name
    req = desc.size_requirements
    model, fixed_size, multiple_of = desc.model, None, int(req.multiple_of or 1)
    task = _PURPOSE_TASK.get(desc.purpose, "restore")
    in_channels, out_channels = int(desc.input_channels), int(desc.output_channels)
    if isinstance(desc, spandrel.MaskedImageModelDescriptor):  # LaMa: image + hole mask, one 4-channel input
        model, task, in_channels = MaskedInput(model), "inpaint", in_channels + 1
    elif arch == "DDColor":
        # spandrel describes DDColor by its call function (1-channel gray in, RGB out, Lab merge
        # inside); the network itself takes the gray photo as RGB and predicts a*, b*.
        if getattr(model, "num_output_channels", 2) != 2:
            raise BadInputError(f"{path.name} is a DDColor model with {model.num_output_channels} output channels; "
                                "only the published 2-channel (a*, b*) colorizers are supported")
        model, task, in_channels, out_channels = ColorizerIO(model), "colorize", 3, 2
        multiple_of = COLORIZER_MULTIPLE_OF
    elif not isinstance(desc, spandrel.ImageModelDescriptor):
        raise BadInputError(f"{path.name} is a {arch} model, not an image-to-image network")
    elif desc.purpose == "FaceSR":  # aligned 512x512 faces, [-1, 1] inside the network
        model = FaceNetIO(model, **FACE_CALL_KWARGS.get(arch, {}))
        fixed_size = max(int(req.minimum or 0), FACE_SIZE)
    spec = ModelSpec(
        name=path.stem,
        architecture=arch,
        task=task,
        scale=int(desc.scale),
        in_channels=in_channels,
        out_channels=out_channels,
        fixed_size=fixed_size,
        multiple_of=multiple_of,
        licence=str(getattr(desc.architecture, "licence", "") or "see upstream"),
        tags=list(desc.tags),
    )
    return model, spec


def load_model(ref: str | os.PathLike | None = None) -> LoadedModel:
    """Load the built-in default (``None``/"default") or a checkpoint file."""
    from restorekit.models import builtin

    if ref is None or str(ref) in (DEFAULT_MODEL, "builtin", BUILTIN_NAME):
        path, name = builtin.BUILTIN_WEIGHTS, BUILTIN_NAME
        if not path.is_file():
            raise BadInputError(f"built-in weights missing from the installation: {path}")
    else:
        from restorekit.models.zoo import resolve_model_ref

        path = Path(resolve_model_ref(ref))  # a zoo name -> its verified download
        name = path.stem
        if not path.exists():
            raise BadInputError(f"model not found: {path} (give a checkpoint path or 'default')")
        if path.is_dir():
            raise BadInputError(f"model path is a directory, not a checkpoint: {path}")
        if path.suffix.lower() not in CHECKPOINT_SUFFIXES:
            raise BadInputError(
                f"not a model checkpoint: {path} (expected one of {', '.join(CHECKPOINT_SUFFIXES)})"
            )
    sd, meta = read_state_dict(path)
    from restorekit.models import retinaface

    if retinaface.is_retinaface_state_dict(sd):  # a face detector, not an image-to-image network
        module = retinaface.RetinaFaceDetector(retinaface.retinaface_from_state_dict(sd, path.name))
        spec = ModelSpec(name=name, architecture=retinaface.ARCHITECTURE, task="detect", scale=1,
                         out_channels=retinaface.OUTPUT_WIDTH, licence="MIT (biubug6/Pytorch_Retinaface)",
                         tags=["face", "detector", "landmarks"])
    elif meta.get("architecture") in ("EdgeRestoreNet", "ScratchUNet"):  # restorekit's own students
        module = builtin.load_student_safetensors(path)
        out_channels = 1 if meta["architecture"] == "ScratchUNet" else 3
        spec = ModelSpec(name=name, architecture=meta["architecture"], task=meta.get("task", "restore"),
                         scale=module.scale, out_channels=out_channels, multiple_of=getattr(module, "multiple_of", 1),
                         licence="Apache-2.0 (restorekit)", tags=["restorekit", "edge"])
    else:
        module, spec = _from_spandrel(sd, path)
    module = module.eval().float().cpu()
    spec.params = int(sum(p.numel() for p in module.parameters()))
    spec.checkpoint_sha256 = sha256_file(path)
    spec.checkpoint = str(Path(path).resolve())
    try:
        size = max(64, spec.multiple_of * 8) if spec.fixed_size is None else spec.fixed_size
        spec.macs_per_megapixel = count_macs(module, spec.in_channels, size)
    except Exception:  # a model that cannot run at that size still loads; MACs stay unknown
        spec.macs_per_megapixel = 0.0
    return LoadedModel(module=module, spec=spec)


def default_reference(manifest) -> str:
    """The checkpoint a bundle (its :class:`~restorekit.bundle.manifest.Manifest`) was made from:
    ``default`` for the built-in model, else the recorded path when that file still has the recorded sha256."""
    from restorekit.models import builtin

    sha = manifest.source.get("checkpoint_sha256")
    if sha and sha == sha256_file(builtin.BUILTIN_WEIGHTS):
        return DEFAULT_MODEL
    recorded = manifest.source.get("checkpoint")
    if recorded and Path(recorded).is_file() and sha256_file(recorded) == sha:
        return recorded
    where = f" (recorded: {recorded}, {'changed since' if recorded and Path(recorded).is_file() else 'not found here'})" if recorded else ""
    raise BadInputError(f"cannot find the checkpoint this bundle was made from{where}: give it with --reference")
