"""Edge rewrites: module substitutions applied before export, each exact in fp32.

PReLU is the one that matters, on both CPU runtimes. On LiteRT, litert-torch lowers it to
RELU/NEG/RELU/MUL/SUB, and in a full-integer model those standalone int8 ops leave XNNPACK's fast
path, so int8 Real-ESRGAN Compact ran at 0.43x the speed of fp32. :func:`prelu_to_max_form`
writes it as ``max(x, a * x)`` (MUL + MAXIMUM, both int8 kernels in XNNPACK): 2.95x faster than
fp32 on the same model (2 cores, 2026-11-23, ``benchmarks/quantization.py``). On ONNX Runtime
the ``PRelu`` kernel itself is slow: 9.25 ms against 1.51 ms for ``Max(x, Mul(x, a))`` on one
1x64x256x256 tensor, 61% of int8 Compact's time (``benchmarks/ort_op_profile.py``).

The big restoration networks need rewrites of their own to convert at all, each exact in fp32
(the same sums, >= 60 dB against the unrewritten model; ``tests/test_big_net_rewrites.py``):
GFPGAN (``gfpgan``: style-code flatten by ``reshape``, StyleGAN2 modulated convs with static
kernels), CodeFormer (``codeformer``: int feature sizes for ``torch.jit.trace``, codebook lookup by
gather instead of scatter), LaMa (``fft_matmul``: the orthonormal FFT as DFT matmuls;
``conv_transpose_crop``: transposed convs with output padding as unpadded ones, cropped). A rewrite
that finds no module of its kind returns the model itself and is not recorded.

A rewrite returns a copy of the model (the caller's module is never changed) and the names of
the modules it replaced, so the bundle's recipe can record what was done. Which target gets
which rewrite is data (``TargetProfile.rewrites`` in ``restorekit.convert``).
"""

from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn import functional as F


class ReluFormPReLU(nn.Module):
    """PReLU as ``relu(x) - a * relu(-x)``: the same values bit for bit, lowered to RELU, MUL and
    SUB, which the TFLite GPU delegate accepts (a PReLU lowered to GREATER + SELECT it rejects).
    litert-torch 0.10 already lowers ``nn.PReLU`` to RELU/MUL/SUB (checked here on Real-ESRGAN
    Compact); the rewrite keeps TFLite bundles so whatever the converter version does."""

    scale_equivariant = True  # f(s * x) = s * f(x) for a positive per-channel s (range equalization)
    #: the target multiplies by the slopes as one per-tensor int8 constant (full-integer TFLite);
    #: False where the MUL stays float (ONNX Runtime). Set per target by ``convert.edge_model``.
    int8_mul_slopes = False
    #: the target quantizes this activation's output on the grid of its input (the conv output
    #: before it) when fine-tuning learns the ranges: ONNX Runtime, where the MUL and MAX run in float
    #: between Q/DQ pairs, so positive values pass through without a second rounding. Set per target
    #: by ``convert.edge_model``.
    output_on_input_grid = False

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)
        self.per_channel = prelu.weight.numel() > 1  # decided here: a branch in forward breaks torch.fx

    def forward(self, x):
        """PReLU computed as the target's edge ops do."""
        a = self.weight.view(1, -1, 1, 1) if self.per_channel else self.weight
        return F.relu(x) - a * F.relu(-x)


class MaxFormPReLU(nn.Module):
    """PReLU as ``max(x, a * x)``, equal to it for slopes ``a <= 1``. A channel whose slope is above
    1 is computed with its sign flipped on both sides (the conv before produces ``-x``, the conv
    after reads ``-y``): ``max(-x, -a x) = -min(x, a x) = -prelu(x)`` for ``a > 1``, so the chain
    ``conv -> PReLU -> conv`` stays exact. ``flipped`` counts those channels."""

    scale_equivariant = True  # f(s * x) = s * f(x) for a positive per-channel s (range equalization)
    int8_mul_slopes = False  # as :class:`ReluFormPReLU`
    output_on_input_grid = False  # as :class:`ReluFormPReLU`

    def __init__(self, prelu: nn.PReLU, flipped: int = 0):
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)
        self.flipped = flipped
        self.per_channel = prelu.weight.numel() > 1  # decided here: a branch in forward breaks torch.fx

    def forward(self, x):
        """PReLU computed as the target's edge ops do."""
        a = self.weight.view(1, -1, 1, 1) if self.per_channel else self.weight
        return torch.maximum(x, a * x)


def _replace(model: nn.Module, match: Callable[[nn.Module], bool] | type,
             make: Callable[[nn.Module], nn.Module]) -> tuple[nn.Module, list[str]]:
    """Every submodule that ``match`` es (a predicate, or a class for ``isinstance``), the model
    itself included, -> ``make(it)``, on a copy; the model itself, uncopied, when none matches."""
    hit = (lambda m: isinstance(m, match)) if isinstance(match, type) else match
    if not any(hit(m) for m in model.modules()):
        return model, []
    out = copy.deepcopy(model)
    if hit(out):
        return make(out), [""]
    done = []
    for name, mod in list(out.named_modules()):
        for child_name, child in list(mod.named_children()):
            if hit(child):
                setattr(mod, child_name, make(child))
                done.append(f"{name}.{child_name}" if name else child_name)
    return out, done


def prelu_to_relu_form(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every ``nn.PReLU`` -> :class:`ReluFormPReLU`."""
    return _replace(model, nn.PReLU, ReluFormPReLU)


@torch.no_grad()
def prelu_to_max_form(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every ``nn.PReLU`` -> :class:`MaxFormPReLU`; slopes above 1 are handled by flipping the sign
    of their channels in the convs on both sides. A PReLU with a slope above 1 and no such pair of
    convs (or one shared slope above 1) becomes :class:`ReluFormPReLU` instead."""
    from restorekit.quantize.layers import conv_act_conv_chains

    out = copy.deepcopy(model)
    mods = dict(out.named_modules())
    flipped = {}
    for first, act, nxt in conv_act_conv_chains(out):
        prelu = mods.get(act)  # None for a functional relu
        if not isinstance(prelu, nn.PReLU) or prelu.weight.numel() != mods[first].out_channels:
            continue
        flip = prelu.weight.detach() > 1
        if flip.any():
            mods[first].weight[flip] *= -1
            if mods[first].bias is not None:
                mods[first].bias[flip] *= -1
            mods[nxt].weight[:, flip] *= -1
        flipped[act] = int(flip.sum())
    done = []
    for name, mod in list(out.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, nn.PReLU):
                full = f"{name}.{child_name}" if name else child_name
                max_ok = full in flipped or bool((child.weight <= 1).all())
                setattr(mod, child_name, MaxFormPReLU(child, flipped.get(full, 0)) if max_ok else ReluFormPReLU(child))
                done.append(full)
    return out, done


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def _conv_with_channels(conv: nn.Conv2d, in_channels: int, out_channels: int) -> nn.Conv2d:
    new = nn.Conv2d(in_channels, out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation, 1,
                    conv.bias is not None, conv.padding_mode)
    return new.to(device=conv.weight.device, dtype=conv.weight.dtype)


@torch.no_grad()
def prelu_to_split_relu(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every other ``conv -> PReLU -> conv`` chain (the 1st, 3rd, ... with no conv in two of them)
    -> ``conv' -> ReLU -> conv'``: the first conv also computes ``-x`` (its output channels doubled,
    weights ``[W; -W]``), the ReLU gives ``[relu(x); relu(-x)]``, and the second conv reads both
    halves with weights ``[V, -V * a]``, since ``prelu(x) = relu(x) - a * relu(-x)``: exact in fp32.

    For int8 activations (ONNX Runtime): a split layer is one fused int8 conv + ReLU, its output
    rounded once on a ``[0, max]`` grid about half as coarse as the ``[min, max]`` one a PReLU layer
    needs, where a PReLU's output (``a * x`` on the negative side) is rounded a second time. The
    doubled channels cost MACs in two convs per split and save the PReLU's float Mul/Max and one
    Q/DQ pair; alternate chains keep each conv doubled at most once (docs/experiments/measurement-log.md,
    "Split PReLUs")."""
    from restorekit.quantize.layers import conv_act_conv_chains

    out = copy.deepcopy(model)
    done, widened = [], set()
    for first, act, nxt in conv_act_conv_chains(out):  # in the order the forward pass runs them
        mods = dict(out.named_modules())
        c1, prelu, c2 = mods[first], mods.get(act), mods[nxt]  # a functional relu has no module
        if (first in widened or nxt in widened  # the chain right after a split one stays as it is
                or not isinstance(prelu, nn.PReLU) or not isinstance(c1, nn.Conv2d)
                or not isinstance(c2, nn.Conv2d) or c1.groups != 1 or c2.groups != 1
                or prelu.weight.numel() not in (1, c1.out_channels)):
            continue
        n = c1.out_channels
        a = prelu.weight.detach().reshape(-1).expand(n).to(c2.weight.dtype)
        wide_out = _conv_with_channels(c1, c1.in_channels, 2 * n)
        wide_out.weight.copy_(torch.cat([c1.weight, -c1.weight]))
        if c1.bias is not None:
            wide_out.bias.copy_(torch.cat([c1.bias, -c1.bias]))
        wide_in = _conv_with_channels(c2, 2 * n, c2.out_channels)
        wide_in.weight.copy_(torch.cat([c2.weight, -c2.weight * a.view(1, -1, 1, 1)], dim=1))
        if c2.bias is not None:
            wide_in.bias.copy_(c2.bias)
        _set_module(out, first, wide_out)
        _set_module(out, act, nn.ReLU())
        _set_module(out, nxt, wide_in)
        widened.update((first, nxt))
        done.append(act)
    return out, done


class PlainLayerNorm2d(nn.Module):
    """Channel LayerNorm of an NCHW tensor (NAFNet's LayerNorm2d) in plain ops: mean and variance
    over C, normalise, per-channel affine. NAFNet computes it in a custom autograd Function, which
    exports as a PythonOp that Core ML cannot convert; the values are the same."""

    def __init__(self, norm: nn.Module):
        super().__init__()
        self.weight = nn.Parameter(norm.weight.detach().clone(), requires_grad=False)
        self.bias = nn.Parameter(norm.bias.detach().clone(), requires_grad=False)
        self.eps = float(norm.eps)

    def forward(self, x):
        """(x - mean_C) / sqrt(var_C + eps) * weight + bias."""
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        y = (x - mu) / (var + self.eps).sqrt()
        return self.weight.view(1, -1, 1, 1) * y + self.bias.view(1, -1, 1, 1)


def _is_function_layernorm2d(module: nn.Module) -> bool:
    """A channel LayerNorm module computed by a custom autograd Function (NAFNet's ``LayerNorm2d``)."""
    return (type(module).__name__ == "LayerNorm2d" and all(hasattr(module, a) for a in ("weight", "bias", "eps"))
            and not isinstance(module, PlainLayerNorm2d))


def layernorm2d_to_plain_ops(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every NAFNet-style ``LayerNorm2d`` (autograd Function) -> :class:`PlainLayerNorm2d`."""
    return _replace(model, _is_function_layernorm2d, PlainLayerNorm2d)


# --- big restoration networks (GFPGAN, CodeFormer, LaMa) on TFLite / Core ML -----------------------


def _replace_by_type_name(model: nn.Module, type_name: str, make: Callable[[nn.Module], nn.Module],
                          when: Callable[[nn.Module], bool] = lambda m: True) -> tuple[nn.Module, list[str]]:
    """:func:`_replace` of every module whose class is named ``type_name`` and passes ``when``:
    matching by name keeps spandrel an optional import here."""
    return _replace(model, lambda m: type(m).__name__ == type_name and when(m), make)


class StaticModulatedConv2d(nn.Module):
    """StyleGAN2's modulated convolution with its weights static: the style scales the input
    channels and the demodulation scales the output channels, around one ordinary conv with the
    stored 4-D kernel: ``conv(x * s, W) * rsqrt(sum_k W^2 @ s^2 + eps)``, the same sums as the
    per-sample kernel ``W * s`` (demodulated) in a grouped conv, which litert-torch cannot lower
    (it fails on the 5-D ``tfl.pow`` of the kernel computed from the input)."""

    def __init__(self, mod: nn.Module):
        super().__init__()
        self.modulation = mod.modulation
        weight = mod.weight.detach()[0]  # (c_out, c_in, k, k)
        self.weight = nn.Parameter(weight.clone(), requires_grad=False)
        self.register_buffer("weight_sq", weight.pow(2).sum((2, 3)).t().contiguous())  # (c_in, c_out)
        self.out_channels, self.demodulate = mod.out_channels, mod.demodulate
        self.sample_mode, self.eps, self.padding = mod.sample_mode, mod.eps, mod.padding

    def forward(self, x, style):
        """The modulated, demodulated conv of ``x`` (b, c_in, h, w) by ``style`` (b, num_style_feat)."""
        s = self.modulation(style)  # (b, c_in)
        if self.sample_mode == "upsample":
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=False)
        elif self.sample_mode == "downsample":
            x = F.interpolate(x, scale_factor=0.5, mode="bilinear", align_corners=False)
        out = F.conv2d(x * s[:, :, None, None], self.weight, padding=self.padding)
        if self.demodulate:
            out = out * torch.rsqrt(torch.matmul(s * s, self.weight_sq) + self.eps)[:, :, None, None]
        return out


def _gfpgan_forward(self, x, return_latents=False, return_rgb=True, randomize_noise=True, **kwargs):
    """GFPGANv1Clean's forward with the style-code flatten as ``reshape``: a ``view`` fails on the
    channels-last tensor litert-torch traces."""
    conditions, unet_skips, out_rgbs = [], [], []
    feat = F.leaky_relu(self.conv_body_first(x), negative_slope=0.2)
    for i in range(self.log_size - 2):
        feat = self.conv_body_down[i](feat)
        unet_skips.insert(0, feat)
    feat = F.leaky_relu(self.final_conv(feat), negative_slope=0.2)
    style_code = self.final_linear(feat.reshape(feat.size(0), -1))
    if self.different_w:
        style_code = style_code.reshape(style_code.size(0), -1, self.num_style_feat)
    for i in range(self.log_size - 2):
        feat = self.conv_body_up[i](feat + unet_skips[i])
        conditions.append(self.condition_scale[i](feat))
        conditions.append(self.condition_shift[i](feat))
        if return_rgb:
            out_rgbs.append(self.toRGB[i](feat))
    image, _ = self.stylegan_decoder([style_code], conditions, return_latents=return_latents,
                                     input_is_latent=self.input_is_latent, randomize_noise=randomize_noise)
    return image, out_rgbs


class AdoptedModule(nn.Module):
    """A module that takes over another's submodules, parameters and settings as they are; a
    subclass gives it a different ``forward`` (a rewrite of the network's own)."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.__dict__.update({k: v for k, v in net.__dict__.items() if k != "training"})
        self.train(net.training)


class ReshapeGFPGAN(AdoptedModule):
    """GFPGANv1Clean (spandrel's ``GFPGAN``) with the same submodules and :func:`_gfpgan_forward`."""

    forward = _gfpgan_forward


@torch.no_grad()
def gfpgan_to_static_ops(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """GFPGAN for TFLite: every ``GFPGANv1Clean`` -> :class:`ReshapeGFPGAN` (flatten by reshape) and
    every StyleGAN2 ``ModulatedConv2d`` -> :class:`StaticModulatedConv2d` (exact in fp32 up to the
    order of the sums)."""
    out, done = _replace_by_type_name(model, "GFPGANv1Clean", ReshapeGFPGAN)
    if not done:
        return model, []
    out, convs = _replace_by_type_name(out, "ModulatedConv2d", StaticModulatedConv2d)
    return out, done + convs


class GatherVectorQuantizer(nn.Module):
    """CodeFormer's ``VectorQuantizer`` with the codebook lookup as a gather (``F.embedding``) and
    the one-hot codes by comparison with ``arange``: the same entries as the original's scatter into
    a zero matrix times the codebook (a one-hot matmul adds exact zeros), which litert-torch lowers
    to a ``stablehlo.scatter`` it cannot convert, nor can Core ML."""

    def __init__(self, vq: nn.Module):
        super().__init__()
        self.embedding = vq.embedding
        self.codebook_size, self.emb_dim, self.beta = vq.codebook_size, vq.emb_dim, vq.beta

    def forward(self, z):
        """Nearest codebook entries of ``z`` (b, emb_dim, h, w), with the original's loss and stats."""
        z = z.permute(0, 2, 3, 1)
        flat = z.reshape(-1, self.emb_dim)
        w = self.embedding.weight
        d = (flat ** 2).sum(dim=1, keepdim=True) + (w ** 2).sum(1) - 2 * torch.matmul(flat, w.t())
        scores, indices = torch.topk(d, 1, dim=1, largest=False)
        one_hot = (indices == torch.arange(self.codebook_size, device=indices.device)).to(z.dtype)
        z_q = F.embedding(indices[:, 0], w).reshape(z.shape)
        loss = torch.mean((z_q.detach() - z) ** 2) + self.beta * torch.mean((z_q - z.detach()) ** 2)
        z_q = z + (z_q - z).detach()
        e_mean = torch.mean(one_hot, dim=0)
        perplexity = torch.exp(-torch.sum(e_mean * torch.log(e_mean + 1e-10)))
        stats = {"perplexity": perplexity, "min_encodings": one_hot, "min_encoding_indices": indices,
                 "min_encoding_scores": torch.exp(-scores / 10), "mean_distance": torch.mean(d)}
        return z_q.permute(0, 3, 1, 2).contiguous(), loss, stats

    def get_codebook_feat(self, indices, shape):
        """Codebook entries at ``indices`` (any shape, flattened), as ``shape`` (b, h, w, c) -> NCHW."""
        z_q = F.embedding(indices.reshape(-1), self.embedding.weight)
        if shape is not None:
            z_q = z_q.reshape(shape).permute(0, 3, 1, 2).contiguous()
        return z_q


def _adain(content, style, eps: float = 1e-5):
    """CodeFormer's ``adaptive_instance_normalization``: ``content`` with ``style``'s per-channel
    mean and (unbiased) std."""
    def stats(feat):
        b, c = feat.shape[:2]
        flat = feat.reshape(b, c, -1)
        return flat.mean(dim=2).reshape(b, c, 1, 1), (flat.var(dim=2) + eps).sqrt().reshape(b, c, 1, 1)

    s_mean, s_std = stats(style)
    c_mean, c_std = stats(content)
    return (content - c_mean) / c_std * s_std + s_mean


def _codeformer_forward(self, x, weight=0.5, **kwargs):
    """CodeFormer's inference forward (w fixed, AdaIN on) with the feature sizes as ints: the
    original keys its fusion layers by ``str(x.shape[-1])``, which is ``'tensor(32)'`` under
    ``torch.jit.trace`` (Core ML), and indexes the codebook by ``topk`` of the softmax."""
    enc_feats = {}
    out_list = [self.fuse_encoder_block[f_size] for f_size in self.connect_list]
    for i, block in enumerate(self.encoder.blocks):
        x = block(x)
        if i in out_list:
            enc_feats[int(x.shape[-1])] = x
    lq_feat = x
    batch = int(x.shape[0])
    pos_emb = self.position_emb.unsqueeze(1).repeat(1, batch, 1)
    query_emb = self.feat_emb(lq_feat.flatten(2).permute(2, 0, 1))  # BCHW -> (HW)BC
    for layer in self.ft_layers:
        query_emb = layer(query_emb, query_pos=pos_emb)
    logits = self.idx_pred_layer(query_emb).permute(1, 0, 2)  # (hw)bn -> b(hw)n
    _, top_idx = torch.topk(F.softmax(logits, dim=2), 1, dim=2)
    quant_feat = self.quantize.get_codebook_feat(top_idx, shape=[batch, 16, 16, 256]).detach()
    x = _adain(quant_feat, lq_feat)
    fuse_list = [self.fuse_generator_block[f_size] for f_size in self.connect_list]
    for i, block in enumerate(self.generator.blocks):
        x = block(x)
        if i in fuse_list and weight > 0:
            size = int(x.shape[-1])
            x = self.fuse_convs_dict[str(size)](enc_feats[size].detach(), x, weight)
    return x, logits


class TraceableCodeFormer(AdoptedModule):
    """spandrel's ``CodeFormer`` with the same submodules and :func:`_codeformer_forward`."""

    forward = _codeformer_forward


def codeformer_to_static_ops(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """CodeFormer for TFLite and Core ML: every ``CodeFormer`` -> :class:`TraceableCodeFormer` and
    its ``VectorQuantizer`` -> :class:`GatherVectorQuantizer` (bit-exact)."""
    out, done = _replace_by_type_name(model, "CodeFormer", TraceableCodeFormer)
    if not done:
        return model, []
    out, quantizers = _replace_by_type_name(out, "VectorQuantizer", GatherVectorQuantizer)
    return out, done + quantizers


def _dft_matrices(h: int, w: int) -> dict[str, torch.Tensor]:
    """Real DFT matrices of an ``h`` x ``w`` image, float64 then rounded once to float32: along W
    the half spectrum (``w // 2 + 1`` bins, forward and inverse with the Hermitian weights 1 or 2),
    along H the full one; the ortho scale ``1 / sqrt(h w)`` folded into the W matrices."""
    import numpy as np

    wr = w // 2 + 1
    scale = 1.0 / np.sqrt(h * w)
    ang_w = 2 * np.pi * np.outer(np.arange(w), np.arange(wr)) / w  # (w, wr)
    ang_h = 2 * np.pi * np.outer(np.arange(h), np.arange(h)) / h  # (h, h), symmetric
    weights = np.full(wr, 2.0)
    weights[0] = 1.0
    if w % 2 == 0:
        weights[-1] = 1.0
    mats = {"cw": np.cos(ang_w) * scale, "sw": np.sin(ang_w) * scale, "ch": np.cos(ang_h), "sh": np.sin(ang_h),
            "icw": (np.cos(ang_w) * weights).T * scale, "isw": (np.sin(ang_w) * weights).T * scale}
    return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float32)) for k, v in mats.items()}


class MatmulFourierUnit(nn.Module):
    """LaMa's ``FourierUnit`` (2-D, ``norm="ortho"``) with ``rfftn`` / ``irfftn`` written as a real
    DFT: matmuls with constant cos / sin matrices of the (static) input size, which every edge
    converter takes; litert-torch has no lowering for a normalised FFT. The same sums in another
    order, exact to float32 rounding."""

    def __init__(self, unit: nn.Module):
        super().__init__()
        self.conv_layer, self.bn, self.relu = unit.conv_layer, unit.bn, unit.relu
        self.use_se, self.spectral_pos_encoding = unit.use_se, unit.spectral_pos_encoding
        if self.use_se:
            self.se = unit.se
        self.spatial_scale_factor, self.spatial_scale_mode = unit.spatial_scale_factor, unit.spatial_scale_mode
        self._dft: dict[tuple[int, int], dict[str, torch.Tensor]] = {}

    def _matrices(self, h: int, w: int, like: torch.Tensor) -> dict[str, torch.Tensor]:
        if (h, w) not in self._dft:
            self._dft[h, w] = _dft_matrices(h, w)
        return {k: v.to(like) for k, v in self._dft[h, w].items()}

    def forward(self, x):
        """FourierUnit's forward: spectrum, 1x1 conv + BN + ReLU on (re, im) channel pairs, back."""
        batch = x.shape[0]
        if self.spatial_scale_factor is not None:
            orig_size = x.shape[-2:]
            x = F.interpolate(x, scale_factor=self.spatial_scale_factor, mode=self.spatial_scale_mode,
                              align_corners=False)
        h, w = int(x.shape[-2]), int(x.shape[-1])
        m = self._matrices(h, w, x)
        ar, ai = torch.matmul(x, m["cw"]), -torch.matmul(x, m["sw"])  # rfft along W: (b, c, h, wr)
        re = torch.matmul(m["ch"], ar) + torch.matmul(m["sh"], ai)  # fft along H
        im = torch.matmul(m["ch"], ai) - torch.matmul(m["sh"], ar)
        ffted = torch.stack((re, im), dim=2).reshape(batch, -1, h, w // 2 + 1)  # (re, im) per channel
        if self.spectral_pos_encoding:
            height, width = ffted.shape[-2:]
            vert = torch.linspace(0, 1, height)[None, None, :, None].expand(batch, 1, height, width).to(ffted)
            hor = torch.linspace(0, 1, width)[None, None, None, :].expand(batch, 1, height, width).to(ffted)
            ffted = torch.cat((vert, hor, ffted), dim=1)
        if self.use_se:
            ffted = self.se(ffted)
        ffted = self.relu(self.bn(self.conv_layer(ffted)))
        ffted = ffted.reshape(batch, -1, 2, h, w // 2 + 1)
        yr, yi = ffted[:, :, 0], ffted[:, :, 1]
        br = torch.matmul(m["ch"], yr) - torch.matmul(m["sh"], yi)  # inverse fft along H
        bi = torch.matmul(m["ch"], yi) + torch.matmul(m["sh"], yr)
        output = torch.matmul(br, m["icw"]) - torch.matmul(bi, m["isw"])  # inverse rfft along W
        if self.spatial_scale_factor is not None:
            output = F.interpolate(output, size=orig_size, mode=self.spatial_scale_mode, align_corners=False)
        return output


def fft_to_matmul_dft(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every 2-D orthonormal LaMa ``FourierUnit`` -> :class:`MatmulFourierUnit`."""
    out, done = _replace_by_type_name(model, "FourierUnit", MatmulFourierUnit,
                                      when=lambda u: not u.ffc3d and u.fft_norm == "ortho")
    return out, done


class CroppedConvTranspose2d(nn.ConvTranspose2d):
    """A ``ConvTranspose2d`` computed with no padding and cropped to the same window: the full
    output of the transposed conv, rows and columns ``padding`` .. ``padding + size`` (output
    padding within the full output), bit-exact. litert-torch cannot legalize a transposed conv with
    ``output_padding`` (LaMa's upsampling: kernel 3, stride 2, padding 1, output padding 1)."""

    def __init__(self, conv: nn.ConvTranspose2d):
        super().__init__(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, 0, 0, conv.groups,
                         conv.bias is not None, conv.dilation)
        self.crop = tuple(conv.padding)
        self.out_extra = tuple(conv.output_padding)
        self.to(device=conv.weight.device, dtype=conv.weight.dtype)
        with torch.no_grad():
            self.weight.copy_(conv.weight)
            if conv.bias is not None:
                self.bias.copy_(conv.bias)

    def forward(self, x, output_size=None):
        """The padded transposed conv's output, cut from the unpadded one."""
        full = F.conv_transpose2d(x, self.weight, self.bias, self.stride, 0, 0, self.groups, self.dilation)
        (ph, pw), (oh, ow) = self.crop, self.out_extra
        h, w = full.shape[-2] - 2 * ph + oh, full.shape[-1] - 2 * pw + ow
        return full[:, :, ph:ph + h, pw:pw + w]


def _output_padded(conv: nn.Module) -> bool:
    """A 2-D transposed conv with output padding that cropping its unpadded output reproduces."""
    return (type(conv) is nn.ConvTranspose2d and any(conv.output_padding) and conv.padding_mode == "zeros"
            and all(o <= p for o, p in zip(conv.output_padding, conv.padding)))


def conv_transpose_to_crop(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every ``nn.ConvTranspose2d`` with output padding -> :class:`CroppedConvTranspose2d`."""
    return _replace(model, _output_padded, CroppedConvTranspose2d)



def _compact_forward(self, x):
    """SRVGGNetCompact's forward with the nearest-neighbour base added before the pixel shuffle, as
    each input channel copied to its ``upscale**2`` sub-pixel channels by a fixed 0/1 1x1 conv: the
    same sums on the same pairs (shuffle(a) + nearest(x) = shuffle(a + copies of x)), bit for bit.
    litert-torch lowers ``F.interpolate(mode="nearest")`` of a dynamic size to a gather it cannot
    size; a 1x1 conv follows any size."""
    out = x
    for layer in self.body:
        out = layer(out)
    return self.upsampler(out + F.conv2d(x, self.base_copies))


class FoldedBaseCompact(AdoptedModule):
    """spandrel's ``SRVGGNetCompact`` with the same submodules and :func:`_compact_forward`."""

    forward = _compact_forward

    def __init__(self, net: nn.Module):
        super().__init__(net)
        self._buffers = dict(self._buffers)  # its own buffer table: the adopted net's stays as it is
        sub = net.upscale * net.upscale
        copies = torch.zeros(net.num_out_ch * sub, net.num_in_ch, 1, 1)
        for c in range(net.num_out_ch):
            copies[c * sub:(c + 1) * sub, c % net.num_in_ch] = 1.0
        self.register_buffer("base_copies", copies.to(next(net.parameters()).device), persistent=False)


def compact_base_before_shuffle(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every Real-ESRGAN ``SRVGGNetCompact`` (3 channels in and out) -> :class:`FoldedBaseCompact`."""
    return _replace_by_type_name(model, "SRVGGNetCompact", FoldedBaseCompact,
                                 when=lambda m: m.num_in_ch == m.num_out_ch)


class TransposedConvPixelShuffle(nn.Module):
    """``nn.PixelShuffle`` as a transposed convolution (kernel = stride = the factor) whose kernel
    copies input channel ``c * r * r + by * r + bx`` to output channel ``c`` at sub-pixel ``(by, bx)``:
    each output is one input times 1, so the same values bit for bit. litert-torch lowers
    ``pixel_shuffle`` to reshapes whose shapes are constants of the traced size, so the graph cannot be
    resized (XNNPACK refuses, and a dynamic-shape export fails); a TRANSPOSE_CONV follows any size."""

    def __init__(self, shuffle: nn.PixelShuffle, channels: int):
        super().__init__()
        r = shuffle.upscale_factor
        kernel = torch.zeros(channels * r * r, channels, r, r)
        for c in range(channels):
            for by in range(r):
                for bx in range(r):
                    kernel[c * r * r + by * r + bx, c, by, bx] = 1.0
        self.register_buffer("kernel", kernel, persistent=False)
        self.factor = r

    def forward(self, x):
        """Pixel shuffle of an NCHW tensor with ``channels * factor**2`` channels."""
        return F.conv_transpose2d(x, self.kernel.to(x.dtype), stride=self.factor)


def pixel_shuffle_to_transposed_conv(model: nn.Module) -> tuple[nn.Module, list[str]]:
    """Every ``nn.PixelShuffle`` -> :class:`TransposedConvPixelShuffle`, its channel count read on one
    small forward pass of the copy (a shuffle does not know its channels). A model that this probe
    cannot run (a fixed input size, another channel count) is returned as it is."""
    out, done = _replace(model, lambda m: type(m) is nn.PixelShuffle, lambda m: m)  # a copy to work on
    if not done:
        return model, []
    channels: dict[str, int] = {}

    def record(name: str):
        def hook(module, args, result) -> None:  # returns None: the output is kept as it is
            channels.setdefault(name, int(result.shape[1]))
        return hook

    hooks = [out.get_submodule(name).register_forward_hook(record(name)) for name in done]
    try:
        param = next(out.parameters(), None)
        side = 4 * max(int(getattr(out, "multiple_of", 1) or 1), 4)
        with torch.no_grad():
            out(torch.rand(1, int(getattr(out, "in_channels", 3)), side, side,
                           device=param.device if param is not None else "cpu"))
    except Exception:  # noqa: BLE001 - a model this probe cannot run keeps its shuffles
        return model, []
    finally:
        for h in hooks:
            h.remove()
    for name in done:
        _set_module(out, name, TransposedConvPixelShuffle(out.get_submodule(name), channels[name]))
    return out, done

#: name -> rewrite; ``TargetProfile.rewrites`` lists the names a target applies, in order.
REWRITES: dict[str, Callable[[nn.Module], tuple[nn.Module, list[str]]]] = {
    "prelu": prelu_to_max_form,
    "split_prelu": prelu_to_split_relu,  # int8 only (``TargetProfile.int8_prelu_split``)
    "layernorm2d": layernorm2d_to_plain_ops,  # Core ML: no PythonOp
    "gfpgan": gfpgan_to_static_ops,  # TFLite: no view of channels-last tensors, no input-computed kernels
    "codeformer": codeformer_to_static_ops,  # TFLite, Core ML: no scatter
    "fft_matmul": fft_to_matmul_dft,  # TFLite: no normalised FFT
    "conv_transpose_crop": conv_transpose_to_crop,  # TFLite: no transposed conv with output padding
    "compact_base": compact_base_before_shuffle,  # TFLite: no nearest upsample of a dynamic size
    "pixel_shuffle": pixel_shuffle_to_transposed_conv,  # TFLite: a graph that resizes (no size-baked reshapes)
}


def apply_rewrites(model: nn.Module, names: tuple[str, ...]) -> tuple[nn.Module, dict[str, int]]:
    """Apply the named rewrites in order; returns the rewritten copy and how many modules each
    replaced (only those that replaced something)."""
    applied = {}
    for name in names:
        rewritten, done = REWRITES[name](model)
        if done:
            model, applied[name] = rewritten, len(done)
    return model, applied


@torch.inference_mode()
def max_difference(a: nn.Module, b: nn.Module, x: torch.Tensor) -> float:
    """Largest absolute difference of two models' outputs on ``x`` (0.0 for an exact rewrite)."""
    return float((a(x) - b(x)).abs().max())
