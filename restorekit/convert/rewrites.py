"""Edge rewrites: module substitutions applied before export, each exact in fp32.

PReLU is the one that matters, on both CPU runtimes. On LiteRT, litert-torch lowers it to
RELU/NEG/RELU/MUL/SUB, and in a full-integer model those standalone int8 ops leave XNNPACK's fast
path, so int8 Real-ESRGAN Compact ran at 0.43x the speed of fp32. :func:`prelu_to_max_form`
writes it as ``max(x, a * x)`` (MUL + MAXIMUM, both int8 kernels in XNNPACK): 2.95x faster than
fp32 on the same model (2 cores, 2026-11-23, ``benchmarks/quantization.py``). On ONNX Runtime
the ``PRelu`` kernel itself is slow: 9.25 ms against 1.51 ms for ``Max(x, Mul(x, a))`` on one
1x64x256x256 tensor, 61% of int8 Compact's time (``benchmarks/ort_op_profile.py``).

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


def _replace(model: nn.Module, kind: type, make: Callable[[nn.Module], nn.Module]) -> tuple[nn.Module, list[str]]:
    out = copy.deepcopy(model)
    done = []
    for name, mod in list(out.named_modules()):
        for child_name, child in list(mod.named_children()):
            if isinstance(child, kind):
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
    out = copy.deepcopy(model)
    done = []
    for name, mod in list(out.named_modules()):
        for child_name, child in list(mod.named_children()):
            if _is_function_layernorm2d(child):
                setattr(mod, child_name, PlainLayerNorm2d(child))
                done.append(f"{name}.{child_name}" if name else child_name)
    return out, done


#: name -> rewrite; ``TargetProfile.rewrites`` lists the names a target applies, in order.
REWRITES: dict[str, Callable[[nn.Module], tuple[nn.Module, list[str]]]] = {
    "prelu": prelu_to_max_form,
    "split_prelu": prelu_to_split_relu,  # int8 only (``TargetProfile.int8_prelu_split``)
    "layernorm2d": layernorm2d_to_plain_ops,  # Core ML: no PythonOp
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
