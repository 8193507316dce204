"""Float-model preparation before int8 post-training quantization (PyTorch, before export).

Two steps that leave the fp32 function unchanged (equalization) or change it only within the
int8 weight grid (rounding), measured on Real-ESRGAN Compact in ``docs/experiments/int8_study.md``:

* :func:`equalize_ranges` - cross-layer range equalization over ``Conv -> (P)ReLU -> Conv``
  pairs: output channel ``c`` of the first conv is divided by ``s_c`` and input channel ``c`` of
  the second multiplied by it (ReLU and PReLU commute with a positive per-channel scale), with
  ``s_c = a_c^alpha / w_c^(1 - alpha)`` balancing the activation range ``a_c`` against the next
  weights' range ``w_c``. Exact in fp32 (up to rounding).
* :func:`gptq_round` - Hessian-aware rounding of every plain conv's weights onto the symmetric
  per-output-channel int8 grid (scale ``max|w| / 127``, what ONNX Runtime and LiteRT use): each
  column's rounding error is pushed onto the columns not yet rounded, weighted by the inverse of
  the input second-moment matrix ``E[u u^T]`` (GPTQ, Frantar et al. 2023). The converter then
  quantizes weights that already lie on its grid.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from restorekit.quantize.layers import conv_act_conv_chains, int8_weight_scale, plain_conv, run_with_hooks
from restorekit.quantize.recipe import DEFAULT_EQUALIZATION_ALPHA


@torch.no_grad()
def _channel_ranges(model: nn.Module, names: list[str], tiles: list[np.ndarray]) -> dict[str, torch.Tensor]:
    """Per-output-channel max |output| of the named convs over the calibration tiles."""
    mods = dict(model.named_modules())
    ranges: dict[str, torch.Tensor] = {}

    def hook(name):
        def fn(_m, _i, out):
            r = out.detach().abs().amax(dim=(0, 2, 3))
            ranges[name] = r if name not in ranges else torch.maximum(ranges[name], r)
        return fn

    run_with_hooks(model, tiles, [(mods[n], hook(n)) for n in names])
    return ranges


@torch.no_grad()
def equalize_ranges(model: nn.Module, tiles: list[np.ndarray],
                    alpha: float = DEFAULT_EQUALIZATION_ALPHA) -> tuple[nn.Module, int]:
    """A copy of ``model`` with its Conv-(P)ReLU-Conv pairs range-equalized; returns it and the pair count."""
    model = copy.deepcopy(model).eval()
    pairs = conv_act_conv_chains(model)
    if not pairs:
        return model, 0
    mods = dict(model.named_modules())
    ranges = _channel_ranges(model, [a for a, _, _ in pairs], tiles)
    for first, _act, second in pairs:
        c1, c2 = mods[first], mods[second]
        a = ranges[first].clamp_min(1e-6)
        w = c2.weight.abs().amax(dim=(0, 2, 3)).clamp_min(1e-6)
        s = a.pow(alpha) / w.pow(1 - alpha)
        s = s / torch.exp(torch.log(s).mean())  # scale-free: geometric mean 1
        c1.weight.div_(s.view(-1, 1, 1, 1))
        if c1.bias is not None:
            c1.bias.div_(s)
        c2.weight.mul_(s.view(1, -1, 1, 1))
    return model, len(pairs)


@torch.no_grad()
def gptq_round(model: nn.Module, tiles: list[np.ndarray], damp: float = 0.01, max_columns: int = 8192,
               seed: int = 0, skip: frozenset[str] = frozenset()) -> tuple[nn.Module, int]:
    """A copy of ``model`` whose plain convs have GPTQ-rounded int8-grid weights; returns it and
    the number of convs rounded. The second-moment matrices come from the float model's own
    inputs to each conv on ``tiles`` (at most ``max_columns`` sampled positions per tile)."""
    model = copy.deepcopy(model).eval()
    convs = {n: m for n, m in model.named_modules() if plain_conv(m) and n not in skip}
    hess: dict[str, torch.Tensor] = {}
    gen = torch.Generator().manual_seed(seed)

    def hook(name, conv):
        def fn(_m, inp, _out):
            u = F.unfold(inp[0].detach(), conv.kernel_size, conv.dilation, conv.padding, conv.stride)
            u = u.permute(1, 0, 2).reshape(u.shape[1], -1)
            if u.shape[1] > max_columns:
                u = u[:, torch.randperm(u.shape[1], generator=gen)[:max_columns]]
            h = (u @ u.T).double() / u.shape[1]
            hess[name] = h if name not in hess else hess[name] + h
        return fn

    run_with_hooks(model, tiles, [(m, hook(n, m)) for n, m in convs.items()])
    for name, conv in convs.items():
        if name in hess:
            conv.weight.copy_(_gptq_layer(conv.weight, hess[name] / len(tiles), damp))
    return model, len(hess)


def _gptq_layer(weight: torch.Tensor, hess: torch.Tensor, damp: float) -> torch.Tensor:
    """Round one conv's weights (rows = output channels) onto the symmetric per-row int8 grid.

    Each row's largest weight is pinned at +-127 steps before the error compensation starts, so the
    rounded row keeps that maximum: runtimes re-derive the grid as ``max|w| / 127`` from the weights
    they get, and must find the grid the rounding used (otherwise they round a second time)."""
    w = weight.reshape(weight.shape[0], -1).double().clone()
    h = hess.clone()
    dead = torch.diag(h) == 0
    h[dead, dead] = 1.0
    w[:, dead] = 0.0  # inputs that are always zero: their weights do nothing
    scale = int8_weight_scale(w)
    rows = torch.arange(w.shape[0])
    pin_col = w.abs().argmax(dim=1)
    pin_val = torch.sign(w[rows, pin_col]) * 127 * scale
    perm = torch.argsort(torch.diag(h), descending=True)  # most active inputs first
    w, h = w[:, perm], h[perm][:, perm]
    pin_col = torch.argsort(perm)[pin_col]  # the pinned column's place after the permutation
    h += damp * torch.mean(torch.diag(h)) * torch.eye(h.shape[0], dtype=h.dtype)
    hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(h)), upper=True)
    q = torch.zeros_like(w)
    for i in range(w.shape[1]):
        col = w[:, i]
        q[:, i] = torch.where(pin_col == i, pin_val, torch.clamp(torch.round(col / scale), -127, 127) * scale)
        err = (col - q[:, i]) / hinv[i, i]
        w[:, i + 1:] -= err[:, None] * hinv[i, i + 1:][None, :]
    q = q[:, torch.argsort(perm)]
    return q.reshape(weight.shape).to(weight.dtype)


def prepare_for_int8(model: nn.Module, tiles: list[np.ndarray], keep_float: frozenset[str] = frozenset(),
                     finetune: dict | None = None, progress=None,
                     alpha: float = DEFAULT_EQUALIZATION_ALPHA) -> tuple[nn.Module, dict]:
    """Equalize, then GPTQ-round (except the layers ``keep_float``), then optionally fine-tune with
    w8a8 fake quantization (``finetune``: :func:`restorekit.quantize.finetune.quantization_finetune`
    settings; with ``below_psnr``, only when the w8a8 simulation of the GPTQ-rounded model is below
    that fidelity on ``tiles``): the float model to hand to an int8 converter, and what was done
    (with the learned ``activation_ranges`` when fine-tuned). ``alpha`` is the equalization strength."""
    original = model
    model, pairs = equalize_ranges(model, tiles, alpha)
    model, rounded = gptq_round(model, tiles, skip=frozenset(keep_float))
    info = {"equalized_pairs": pairs, "equalization_alpha": alpha, "gptq_rounded_convs": rounded}
    finetune = dict(finetune) if finetune is not None else None
    below = finetune.pop("below_psnr", None) if finetune is not None else None
    if below is not None:  # fine-tune only when plain int8 would miss the fidelity bar
        from restorekit.quantize.finetune import simulated_psnr

        ptq = simulated_psnr(model, original, tiles, keep_float=frozenset(keep_float))
        info["simulated_ptq_psnr_db"] = round(ptq, 2)
        if ptq >= below:
            info["finetune"] = f"not needed: simulated w8a8 fidelity {ptq:.2f} dB >= {below:g} dB"
            finetune = None
    if finetune is not None:
        from restorekit.quantize.finetune import quantization_finetune

        res = quantization_finetune(model, original, tiles, keep_float=frozenset(keep_float), progress=progress,
                                    **finetune)
        model = res.model
        info["finetune"] = res.report
        info["activation_ranges"] = {n: {"input": list(res.input_ranges[n]),
                                         **({"output": list(res.output_ranges[n])} if n in res.output_ranges else {})}
                                     for n in res.input_ranges}
    return model, info
