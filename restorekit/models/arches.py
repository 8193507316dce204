"""Registry of the field's restoration architectures, for conversion coverage.

Each entry builds the REAL architecture (spandrel / spandrel-extra-arches classes, randomly
initialised), restorekit's own students, or a real checkpoint from ``../shared/weights``.
``small=True`` gives a reduced configuration of the same architecture (fewer blocks/channels)
for fast tests; ``small=False`` the published one. Which targets are expected to convert is data
(``expect``): ``ok`` (>= 60 dB vs PyTorch), ``fail`` (the converter raises ConversionError),
``bad`` (converts, but the file does not load/run or misses 60 dB).

:meth:`Arch.save_checkpoint` writes an instance's weights as a file laid out like the official
checkpoint (the inner network's state dict, under the official file's wrapper key): what a user
gives ``restorekit bundle``. The coverage script and ``tests/test_loader_path.py`` go through
``models.loader.load_model`` (spandrel detection) with it. Every small configuration is one spandrel
detects except GFPGAN's (``small_loadable``): spandrel builds GFPGANv1Clean at its published
configuration whatever the state dict holds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from restorekit.models.spec import ModelSpec

SHARED = Path(__file__).resolve().parents[3] / "shared"
WEIGHTS = SHARED / "weights"


def _face(model: nn.Module, arch: str) -> nn.Module:
    """A face network as restorekit loads it: [0, 1] io, call options fixed (``models.loader``)."""
    from restorekit.models.io import FACE_CALL_KWARGS, FaceNetIO

    return FaceNetIO(model, **FACE_CALL_KWARGS[arch])


@dataclass(frozen=True)
class Arch:
    """One architecture: how to build it and what its io needs."""

    name: str
    task: str
    scale: int
    builder: Callable[[bool], nn.Module] | None  # None: ``weights`` is loaded
    licence: str
    in_channels: int = 3
    out_channels: int = 3
    fixed_size: int | None = None  # published config's fixed input side
    small_fixed_size: int | None = None  # fixed side of the small config (None = same as fixed_size)
    multiple_of: int = 1
    io: str = ""
    published_fast: bool = False  # the published config converts in reasonable time on 2 CPU cores
    expect: dict[str, str] = field(default_factory=dict)  # target -> ok | fail | bad
    path: str = ""  # recommended route where a target fails
    weights: str = ""  # a real checkpoint (a path, or "default": the built-in model) instead of a builder
    checkpoint: tuple[str, str] = ("", "")  # file names like the official ones: (small config, published)
    wrap: str = ""  # the official file's top-level key around the state dict ("params_ema", "params"; "": none)
    small_loadable: bool = True  # spandrel detects the small configuration from its state dict
    configurable: bool = True  # the architecture has a smaller configuration at all (LaMa's generator has none)

    @property
    def real_weights(self) -> bool:
        """The entry is a real checkpoint (loaded), not a randomly initialised architecture."""
        return bool(self.weights)

    def build(self, small: bool = True) -> nn.Module:
        """A randomly initialised instance (``small``: a reduced configuration for tests), or the
        loaded real checkpoint."""
        if self.weights:
            from restorekit.models.loader import load_model

            return load_model(self.weights).module
        return self.builder(small).eval().float()

    def spec(self, small: bool = True) -> ModelSpec:
        """The ModelSpec of :meth:`build`'s instance."""
        fixed = (self.small_fixed_size or self.fixed_size) if small else self.fixed_size
        return ModelSpec(name=self.name, architecture=self.name, task=self.task, scale=self.scale,
                         in_channels=self.in_channels, out_channels=self.out_channels, fixed_size=fixed,
                         multiple_of=self.multiple_of, licence=self.licence)

    def save_checkpoint(self, model: nn.Module, folder: Path, small: bool = True) -> str:
        """Write ``model`` (an instance of :meth:`build`) to ``folder`` as a file laid out like the
        official checkpoint and return its path, for ``load_model`` / ``restorekit bundle``: the
        network inside restorekit's io wrapper, under the official wrapper key; restorekit's students
        as safetensors with the trainer's metadata. Real checkpoints return their own reference."""
        import torch

        from restorekit.models.io import ColorizerIO, FaceNetIO, MaskedInput

        if self.weights:
            return self.weights
        net = model.model if isinstance(model, (FaceNetIO, ColorizerIO, MaskedInput)) else model
        sd = {k: v.detach().cpu().contiguous().clone() for k, v in net.state_dict().items()}
        out = Path(folder) / self.checkpoint[0 if small else 1]
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.suffix == ".safetensors":  # restorekit's own students: the metadata rebuilds the network
            from safetensors.torch import save_file

            meta = {"architecture": type(net).__name__, "task": self.task, "scale": str(self.scale),
                    "config": json.dumps(net.config)}
            save_file(sd, str(out), metadata=meta)
        else:
            torch.save({self.wrap: sd} if self.wrap else sd, str(out))
        return str(out)


def _esrgan(small):
    from spandrel.architectures.ESRGAN import ESRGAN

    return ESRGAN(num_filters=16, num_blocks=1, scale=4) if small else ESRGAN(num_filters=64, num_blocks=23, scale=4)


def _swinir(small):
    from spandrel.architectures.SwinIR import SwinIR

    if small:
        return SwinIR(img_size=32, embed_dim=24, depths=[2], num_heads=[2], window_size=8, mlp_ratio=2.0,
                      upscale=4, upsampler="pixelshuffle", drop_path_rate=0.0)
    # classical SR x4 (001_classicalSR_DF2K_s64w8_SwinIR-M_x4)
    return SwinIR(img_size=64, embed_dim=180, depths=[6] * 6, num_heads=[6] * 6, window_size=8, mlp_ratio=2.0,
                  upscale=4, upsampler="pixelshuffle", drop_path_rate=0.0)


def _nafnet(small):
    from spandrel.architectures.NAFNet import NAFNet

    if small:
        return NAFNet(width=8, middle_blk_num=1, enc_blk_nums=[1, 1], dec_blk_nums=[1, 1])
    return NAFNet(width=32, middle_blk_num=12, enc_blk_nums=[2, 2, 4, 8], dec_blk_nums=[2, 2, 2, 2])  # SIDD width32


def _scunet(small):
    from spandrel.architectures.SCUNet import SCUNet

    return SCUNet(config=[1] * 7, dim=64) if small else SCUNet(config=[4] * 7, dim=64)


def _compact(small):
    from spandrel.architectures.Compact import Compact

    return Compact(num_feat=16, num_conv=4, upscale=4) if small else Compact(num_feat=64, num_conv=16, upscale=4)


def _gfpgan(small):
    from spandrel.architectures.GFPGAN import GFPGAN

    if small:
        return _face(GFPGAN(out_size=64, num_style_feat=64, channel_multiplier=1, num_mlp=2, narrow=0.25), "GFPGAN")
    return _face(GFPGAN(out_size=512, num_style_feat=512, channel_multiplier=2, num_mlp=8), "GFPGAN")


def _codeformer(small):
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    if small:
        # n_head stays the published 8: spandrel cannot read it from the weights and assumes 8
        return _face(CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64), "CodeFormer")
    return _face(CodeFormer(), "CodeFormer")


def _ddcolor(small):
    from spandrel_extra_arches.architectures.DDColor import DDColor

    from restorekit.models.io import ColorizerIO

    if small:
        net = DDColor(encoder_name="convnext-t", input_size=(64, 64), nf=512, num_output_channels=2,
                      num_queries=16, dec_layers=1)
    else:  # the published paper-tiny model (ConvNeXt-T, 100 queries, 9 decoder layers): the one an app ships
        net = DDColor(encoder_name="convnext-t", input_size=(512, 512), nf=512, num_output_channels=2,
                      num_queries=100, dec_layers=9)
    return ColorizerIO(converge_spectral_norms(net))


@torch.no_grad()
def converge_spectral_norms(net, iterations: int = 100):
    """Set each spectral norm's stored ``u``, ``v`` to the weight's leading singular vectors, as a trained
    checkpoint holds them. Freshly initialised they are random, so eval mode divides each weight by a
    random fraction of its norm and activations grow to 1e10 through DDColor's decoder: no trained
    network looks like that, and no precision below fp32 could reproduce it."""
    from torch.nn.utils.spectral_norm import SpectralNorm

    for module in net.modules():
        norm = next((h for h in module._forward_pre_hooks.values() if isinstance(h, SpectralNorm)), None)
        if norm is None:
            continue
        u, v = getattr(module, norm.name + "_u"), getattr(module, norm.name + "_v")
        w = norm.reshape_weight_to_matrix(getattr(module, norm.name + "_orig"))
        for _ in range(iterations):
            v.copy_(torch.nn.functional.normalize(w.t() @ u, dim=0))
            u.copy_(torch.nn.functional.normalize(w @ v, dim=0))
    return net


def _lama(small):
    from spandrel.architectures.LaMa import LaMa

    from restorekit.models.io import MaskedInput

    return MaskedInput(LaMa(in_nc=4, out_nc=3))  # no configuration knobs: the published big-lama generator


def _student(small):
    from restorekit.models.students import build_student

    return build_student("edge-s-x4")


_RUN = {"onnx": "ok", "tflite": "ok", "coreml": "ok"}
_FACE_PATH = ("TFLite: style-code flatten .view -> .reshape (channels-last strides), StyleGAN2 modulated conv -> "
              "static 4-D weights (noise injection is already constant: stored buffers)")

ARCHES: dict[str, Arch] = {a.name: a for a in [
    Arch("RRDBNet", "sr", 4, _esrgan, "Apache-2.0 (ESRGAN / Real-ESRGAN)", io="any size", expect=dict(_RUN),
         path="distill to an edge student (16.7 GMAC/MP is too heavy for phones)",
         checkpoint=("RRDB_ESRGAN_x4.pth",) * 2),
    Arch("SwinIR", "sr", 4, _swinir, "Apache-2.0", multiple_of=8, io="window 8: H, W padded to a multiple of 8",
         expect=dict(_RUN), path="distill to an edge student",
         checkpoint=("002_lightweightSR_DIV2K_s64w8_SwinIR-S_x4.pth", "001_classicalSR_DF2K_s64w8_SwinIR-M_x4.pth"),
         wrap="params"),
    Arch("NAFNet", "restore", 1, _nafnet, "MIT", multiple_of=16, io="H, W multiple of 2^(levels)",
         expect=dict(_RUN),  # Core ML: LayerNorm2d (an autograd Function) is rewritten to plain ops
         checkpoint=("NAFNet-SIDD-width32.pth",) * 2, wrap="params"),
    Arch("SCUNet", "restore", 1, _scunet, "Apache-2.0", multiple_of=64, io="H, W multiple of 64 (window 8, 3 downs)",
         expect=dict(_RUN), path="rewrite the masked window assignment as a constant additive mask",
         checkpoint=("scunet_color_real_psnr.pth",) * 2),
    Arch("Compact", "sr", 4, _compact, "BSD-3-Clause (Real-ESRGAN)", io="any size", published_fast=True,
         expect=dict(_RUN), checkpoint=("realesr-general-x4v3.pth",) * 2, wrap="params"),
    Arch("GFPGAN", "face", 1, _gfpgan, "Apache-2.0 (+ StyleGAN2 NVIDIA licence parts)", fixed_size=512,
         small_fixed_size=64, io="aligned face 512x512 in [0, 1] (network works in [-1, 1]); stored noise, no RGB pyramid",
         expect=dict(_RUN), path=_FACE_PATH,
         checkpoint=("GFPGANv1.4.pth",) * 2, wrap="params_ema", small_loadable=False),
    Arch("CodeFormer", "face", 1, _codeformer, "S-Lab License 1.0 (non-commercial)", fixed_size=512,
         io="aligned face 512x512 in [0, 1] (network works in [-1, 1]); fidelity weight w=0.5 baked in",
         expect=dict(_RUN),
         path="TFLite: codebook lookup (argmin + scatter one-hot) -> gather rewrite, or distill to an edge face student "
              "(the licence is non-commercial anyway)",
         checkpoint=("codeformer.pth",) * 2, wrap="params_ema"),
    Arch("DDColor", "colorize", 1, _ddcolor, "Apache-2.0", out_channels=2, fixed_size=512, small_fixed_size=64,
         io="gray RGB (L only) at input_size; outputs (ab + 128) / 255 at input_size, merged with full-res L outside",
         expect=dict(_RUN), path="export the network only; Lab merge in the runtime",
         checkpoint=("ddcolor_paper_tiny.pth",) * 2),
    Arch("LaMa", "inpaint", 1, _lama, "Apache-2.0", in_channels=4, multiple_of=8,
         io="RGB + mask (1 = hole) as 4 channels; H, W multiple of 8; FFT (rfftn) in every FFC block",
         expect=dict(_RUN), configurable=False,
         checkpoint=("big-lama.pth",) * 2),
    Arch("Compact-animevideov3", "sr", 4, None, "BSD-3-Clause", io="real weights", published_fast=True,
         expect=dict(_RUN), weights=str(WEIGHTS / "realesr-animevideov3.pth")),
    Arch("RetinaFace-mnet0.25", "detect", 1, None, "MIT",
         out_channels=16, io="real weights; output [1, P, 16] raw priors", published_fast=True,
         expect=dict(_RUN), weights=str(WEIGHTS / "retinaface_mobilenet0.25.pth")),
    Arch("edge-s-x4", "sr", 4, _student, "Apache-2.0 (restorekit)", published_fast=True, expect=dict(_RUN),
         checkpoint=("edge-s-x4.safetensors",) * 2),
    Arch("restorekit-x2", "restore", 2, None, "Apache-2.0 (restorekit)", published_fast=True,
         expect=dict(_RUN), weights="default"),
    Arch("ScratchUNet", "scratch", 1, None, "Apache-2.0 (restorekit)", out_channels=1, multiple_of=4,
         published_fast=True, expect=dict(_RUN), weights=str(Path(__file__).parent / "weights/scratch_unet.safetensors")),
]}
