"""Sensitivity analysis and automatic mixed precision.

:func:`layer_sensitivity` quantizes one layer at a time in PyTorch (fake quantization: int8
per-channel symmetric weights, uint8 per-tensor min-max input and output) and measures the
output PSNR against the float model: a fast, target-independent ranking.
:func:`search_float_layers` then keeps the most sensitive layers in float, measuring the real
target's quantized model each time, until the fidelity budget holds on the calibration tiles.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from restorekit.core.metrics import psnr
from restorekit.quantize.layers import int8_weight_scale


def _fake_quant(x: torch.Tensor, lo: float, hi: float, levels: int = 255) -> torch.Tensor:
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = max(hi - lo, 1e-12) / levels
    zero = round(-lo / scale)
    return (torch.clamp(torch.round(x / scale) + zero, 0, levels) - zero) * scale


def weight_fake_quant(w: torch.Tensor, axis: int) -> torch.Tensor:
    """``w`` with int8 symmetric weights along ``axis`` (per channel), rounded and dequantized."""
    scale = int8_weight_scale(w, axis, keepdim=True)
    return torch.clamp(torch.round(w / scale), -127, 127) * scale


@torch.no_grad()
def layer_sensitivity(model: nn.Module, tiles: list[np.ndarray], layers: dict[str, str]) -> dict[str, float]:
    """``{layer: PSNR (dB) of the model with only that layer quantized}``, lowest = most sensitive."""
    model = copy.deepcopy(model).eval()
    mods = dict(model.named_modules())
    xs = [torch.from_numpy(t) for t in tiles]
    refs = [model(x).numpy() for x in xs]
    ranges: dict[str, list[float]] = {}

    def observe(name):
        def fn(_m, inp, out):
            r = ranges.setdefault(name, [np.inf, -np.inf, np.inf, -np.inf])
            r[0], r[1] = min(r[0], float(inp[0].min())), max(r[1], float(inp[0].max()))
            r[2], r[3] = min(r[2], float(out.min())), max(r[3], float(out.max()))
        return fn

    handles = [mods[n].register_forward_hook(observe(n)) for n in layers]
    for x in xs:
        model(x)
    for h in handles:
        h.remove()
    out = {}
    for name, kind in layers.items():
        if name not in ranges:
            continue
        m = mods[name]
        lo_i, hi_i, lo_o, hi_o = ranges[name]
        saved = m.weight.detach().clone()
        m.weight.copy_(weight_fake_quant(saved, 1 if kind == "ConvTranspose2d" else 0))
        pre = m.register_forward_pre_hook(lambda _m, inp, lo=lo_i, hi=hi_i: (_fake_quant(inp[0], lo, hi),) + inp[1:])
        post = m.register_forward_hook(lambda _m, _i, o, lo=lo_o, hi=hi_o: _fake_quant(o, lo, hi))
        try:
            out[name] = float(np.mean([psnr(model(x).numpy(), r) for x, r in zip(xs, refs)]))
        finally:
            pre.remove()
            post.remove()
            m.weight.copy_(saved)
    return out


@dataclass
class MixedResult:
    """What the search kept in float and what it measured on the way."""

    float_layers: list[str]
    psnr_db: float
    budget_db: float
    met: bool
    sensitivity: dict[str, float]
    trials: list[dict] = field(default_factory=list)


def search_float_layers(ranking: list[str], measure: Callable[[list[str]], float], budget_db: float) -> MixedResult:
    """Fewest layers (a prefix of ``ranking``, most sensitive first) to keep in float so that
    ``measure(float_layers)`` >= ``budget_db``: doubling, then bisection between the last miss
    and the first hit (assumes fidelity grows with the number of float layers)."""
    trials: dict[int, float] = {}

    def at(k: int) -> float:
        if k not in trials:
            trials[k] = measure(ranking[:k])
        return trials[k]

    if at(0) >= budget_db:
        k = 0
    else:
        lo, hi = 0, 1
        while hi < len(ranking) and at(hi) < budget_db:
            lo, hi = hi, min(2 * hi, len(ranking))
        if at(hi) < budget_db:  # even all-float-but-quantized-io misses: report the best found
            k = max(trials, key=trials.get)
        else:
            while hi - lo > 1:
                mid = (lo + hi) // 2
                lo, hi = (lo, mid) if at(mid) >= budget_db else (mid, hi)
            k = hi
    return MixedResult(ranking[:k], trials[k], budget_db, trials[k] >= budget_db, {},
                       [{"float_layers": k, "psnr_db": round(v, 3)} for k, v in sorted(trials.items())])
