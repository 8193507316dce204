"""Quantization-aware fine-tuning of a float model for w8a8 (after equalization and GPTQ).

Post-training recipes leave Real-ESRGAN Compact near 42 dB of fidelity at w8a8 because every one
of its 35 quantized activations adds noise (``docs/int8_study.md``). Here the model
is trained for a few hundred steps, on crops of the calibration photos, to make its
fake-quantized output match the *original* fp32 model's output (MSE, the loss PSNR measures):

* weights: symmetric per-output-channel int8 with scale ``max|w| / 127`` - the grid ONNX Runtime
  and LiteRT use - through a straight-through estimator, so the converter's own rounding of the
  saved float weights reproduces what was trained;
* PReLU slopes, where the target multiplies by them in int8 (TFLite's ``MUL`` after the edge
  rewrite): one per-tensor asymmetric int8 grid, as the converter stores them;
* activations: asymmetric uint8 at each conv's input and output (where ONNX Runtime's QDQ places
  them; a conv followed by ReLU has one point, after the ReLU), with learned ranges (log-scale
  offsets of the observed min / max, LSQ-style gradients), handed to the quantizer as
  ``rmin``/``rmax`` overrides. Where the target keeps a PReLU in float between Q/DQ pairs (ONNX
  Runtime), the PReLU output can be quantized on the grid of the conv output before it
  (``tie_prelu_grids``): one learned range for both, so a positive value is rounded once, not a
  second time onto a slightly different grid (docs/benchmarks.md, "One grid per PReLU").

The result is a float model plus its activation ranges; converters quantize it as usual.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils import parametrize

from restorekit.core.metrics import psnr, psnr_from_mse
from restorekit.quantize.layers import conv_act_conv_chains, int8_weight_scale, plain_conv, run_with_hooks


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """Round to the nearest integer with a straight-through (identity) gradient."""
    return x + (torch.round(x) - x).detach()


def fake_quant_uint8(x: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor) -> torch.Tensor:
    """ONNX Runtime's asymmetric uint8 quantize-dequantize of ``x`` over ``[min(lo, 0), max(hi, 0)]``
    (scale ``(hi - lo) / 255``, rounded zero point), differentiable in ``x``, ``lo`` and ``hi``."""
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = torch.clamp(hi - lo, min=1e-8) / 255.0
    zp = torch.clamp(_round_ste(-lo / scale), 0.0, 255.0)
    q = torch.clamp(_round_ste(x / scale) + zp, 0.0, 255.0)
    return (q - zp) * scale


class _WeightInt8(nn.Module):
    """Parametrization: per-output-channel symmetric int8 fake quantization (scale max|w| / 127)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` rounded onto its per-channel int8 grid."""
        scale = int8_weight_scale(w, keepdim=True)
        return torch.clamp(_round_ste(w / scale), -127.0, 127.0) * scale


class _SlopesInt8(nn.Module):
    """Parametrization: per-tensor asymmetric int8 fake quantization over ``[min(w, 0), max(w, 0)]``,
    how ai-edge-quantizer stores the slopes of a PReLU lowered to ``MUL`` (step ~0.009 on Compact)."""

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        """``w`` rounded onto its per-tensor int8 grid."""
        return fake_quant_uint8(w, w.detach().min(), w.detach().max())


class _Range(nn.Module):
    """A learned activation range: observed (lo, hi) times exp of a learned log-offset each."""

    def __init__(self, lo: float, hi: float, learn: bool = True):
        super().__init__()
        self.register_buffer("lo0", torch.tensor(float(min(lo, 0.0))))
        self.register_buffer("hi0", torch.tensor(float(max(hi, 1e-6))))
        self.log_scale = nn.Parameter(torch.zeros(2), requires_grad=learn)

    def bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The range's (lo, hi) as tensors (differentiable in the learned offsets)."""
        return self.lo0 * torch.exp(self.log_scale[0]), self.hi0 * torch.exp(self.log_scale[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` quantize-dequantized on the range's uint8 grid."""
        lo, hi = self.bounds()
        return fake_quant_uint8(x, lo, hi)

    @torch.no_grad()
    def value(self) -> tuple[float, float]:
        """The range's (lo, hi) as floats."""
        lo, hi = self.bounds()
        return float(lo), float(hi)


@dataclass
class FinetuneResult:
    """The fine-tuned float model, its activation ranges, and what the training did."""

    model: nn.Module
    input_ranges: dict[str, tuple[float, float]]  # conv module name -> (rmin, rmax) of its input
    output_ranges: dict[str, tuple[float, float]]  # conv module name -> of its output (absent: ReLU-fused)
    report: dict = field(default_factory=dict)
    simulation: "FakeQuantized | None" = None  # ``with result.simulation as fq:`` runs the w8a8 simulation


@torch.no_grad()
def _observe(model: nn.Module, convs: dict[str, nn.Module], tiles: list[np.ndarray]):
    """Min and max (0 included) of each conv's input and output over ``tiles``."""
    lo_in, hi_in, lo_out, hi_out = {}, {}, {}, {}

    def hook(name):
        """The forward hook recording conv ``name``'s ranges."""
        def fn(_m, inp, out):
            """Widen the recorded ranges to this call's input and output."""
            for (lo, hi), t in (((lo_in, hi_in), inp[0]), ((lo_out, hi_out), out)):
                lo[name] = min(lo.get(name, 0.0), float(t.min()))
                hi[name] = max(hi.get(name, 0.0), float(t.max()))
        return fn

    run_with_hooks(model, tiles, [(m, hook(n)) for n, m in convs.items()])
    return lo_in, hi_in, lo_out, hi_out


@torch.no_grad()
def _reads_model_input(model: nn.Module, convs: dict[str, nn.Module], tile: np.ndarray) -> set[str]:
    """Names of the convs whose input is the model's input tensor itself."""
    found, seen = set(), {}
    hooks = [(model, lambda _m, inp: seen.update(x=inp[0]))]  # the model's own pre-hook runs first
    hooks += [(m, lambda _m, inp, n=n: found.add(n) if inp[0] is seen["x"] else None) for n, m in convs.items()]
    run_with_hooks(model, [tile], pre_hooks=hooks)
    return found


def _photometric(t: torch.Tensor, p: float, gen: torch.Generator) -> torch.Tensor:
    """With probability ``p`` each: ``t`` (3xHxW in [0, 1]) made grayscale (Rec. 601 luma), and its
    contrast raised by a gain from 1 to 2 about its mean (clipped to [0, 1])."""
    if float(torch.rand(1, generator=gen)) < p:
        t = (0.299 * t[0] + 0.587 * t[1] + 0.114 * t[2]).expand(3, -1, -1).clone()
    if float(torch.rand(1, generator=gen)) < p:
        gain = 1.0 + float(torch.rand(1, generator=gen))
        mean = t.mean()
        t = ((t - mean) * gain + mean).clamp(0.0, 1.0)
    return t


def random_crops(tiles: list[np.ndarray], batch: int, crop: int, gen: torch.Generator,
                 augment: float = 0.0) -> torch.Tensor:
    """``batch`` random ``crop`` x ``crop`` crops of ``tiles``, each turned/flipped at random, then
    (``augment`` > 0) photometrically varied by :func:`_photometric`."""
    out = []
    for _ in range(batch):
        t = torch.from_numpy(tiles[int(torch.randint(len(tiles), (1,), generator=gen))])[0]
        h, w = t.shape[-2:]
        c = min(crop, h, w)
        y = int(torch.randint(h - c + 1, (1,), generator=gen))
        x = int(torch.randint(w - c + 1, (1,), generator=gen))
        t = t[:, y:y + c, x:x + c]
        k = int(torch.randint(8, (1,), generator=gen))
        t = torch.rot90(t, k % 4, dims=(1, 2))
        out.append(t.flip(2) if k >= 4 else t)
    if augment > 0:
        out = [_photometric(t, augment, gen) for t in out]
    return torch.stack(out)


class FakeQuantized:
    """Context manager: ``model``'s convs run w8a8 fake-quantized (weights by parametrization,
    activations by hooks with the ``_Range`` modules of ``in_fq`` / ``out_fq``, keyed by module name
    with dots replaced by slashes)."""

    def __init__(self, model: nn.Module, convs: dict[str, nn.Module], in_fq: nn.ModuleDict, out_fq: nn.ModuleDict,
                 model_out: tuple[float, float] | None = None, slopes: list[nn.Module] = (),
                 weights: bool = True, activations: bool = True):
        self.model, self.convs, self.in_fq, self.out_fq, self.handles = model, convs, in_fq, out_fq, []
        self.slopes = list(slopes)  # activations whose slopes the target multiplies by in int8
        self.model_out = model_out  # the model output's fixed (min, max): quantized like the quantizer does
        self.weights, self.activations = weights, activations  # which half of w8a8 to simulate

    def __enter__(self) -> nn.Module:
        for n, m in self.convs.items():
            key = n.replace(".", "/")
            if self.weights:
                parametrize.register_parametrization(m, "weight", _WeightInt8())
            if not self.activations:
                continue
            fq_in = self.in_fq[key]
            self.handles.append(m.register_forward_pre_hook(lambda _m, inp, f=fq_in: (f(inp[0]),) + tuple(inp[1:])))
            if key in self.out_fq:
                fq_out = self.out_fq[key]
                self.handles.append(m.register_forward_hook(lambda _m, _i, out, f=fq_out: f(out)))
        for m in self.slopes if self.weights else ():
            parametrize.register_parametrization(m, "weight", _SlopesInt8())
        if self.model_out is not None and self.activations:
            lo, hi = (torch.tensor(v) for v in self.model_out)
            self.handles.append(self.model.register_forward_hook(lambda _m, _i, out: fake_quant_uint8(out, lo, hi)))
        return self.model

    def __exit__(self, *exc) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []
        for m in [*self.convs.values(), *self.slopes] if self.weights else ():
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)

    def input_ranges(self) -> dict[str, tuple[float, float]]:
        """Conv module name -> (rmin, rmax) of its input."""
        return {n: self.in_fq[n.replace(".", "/")].value() for n in self.convs}

    def output_ranges(self) -> dict[str, tuple[float, float]]:
        """Conv module name -> (rmin, rmax) of its output (absent where the output is ReLU-fused)."""
        return {n: self.out_fq[n.replace(".", "/")].value() for n in self.convs if n.replace(".", "/") in self.out_fq}

    def activation_ranges(self) -> dict[str, dict[str, list[float]]]:
        """The ranges as a recipe hands them to the quantizer (``Recipe.activation_ranges``):
        ``{conv: {"input": [lo, hi], "output": [lo, hi]}}``."""
        outs = self.output_ranges()
        return {n: {"input": list(r), **({"output": list(outs[n])} if n in outs else {})}
                for n, r in self.input_ranges().items()}

    @torch.no_grad()
    def use_activation_ranges(self, ranges: dict[str, dict[str, list[float]]]) -> None:
        """Simulate with the given ranges (:meth:`activation_ranges`' format) instead of the
        current ones; their learned offsets are reset."""
        for n, r in ranges.items():
            key = n.replace(".", "/")
            for table, side in ((self.in_fq, "input"), (self.out_fq, "output")):
                if side in r and key in table:
                    table[key].lo0.fill_(float(r[side][0]))
                    table[key].hi0.fill_(float(r[side][1]))
                    table[key].log_scale.zero_()


def w8a8_simulation(model: nn.Module, tiles: list[np.ndarray], keep_float: frozenset[str] = frozenset(),
                    weights: bool = True, activations: bool = True, tie_grids: bool = False,
                    learn_ranges: bool = True, output_range: tuple[float, float] | None = None) -> FakeQuantized:
    """``with w8a8_simulation(model, tiles) as fq: fq(x)`` runs ``model`` w8a8 fake-quantized the way
    the int8 targets compute it, with activation ranges observed on ``tiles`` (learnable ``_Range``
    modules unless ``learn_ranges`` is false, except where noted), the layers ``keep_float`` in
    float; ``weights=False`` or ``activations=False`` leaves that half in float (an error budget).
    With ``tie_grids``, an activation marked ``output_on_input_grid`` (a PReLU the target keeps in
    float) quantizes its output with the very ``_Range`` of the conv output before it, as the
    converter will be told to. The model output is quantized over ``output_range`` where the
    target knows it (a final clamp: ONNX Runtime quantizes a ``Clip`` output over its bounds),
    else over the range observed on ``tiles``."""
    convs = {n: m for n, m in model.named_modules() if plain_conv(m) and n not in keep_float}
    mods = dict(model.named_modules())
    # a conv followed by a ReLU (module or function) has its output fused into the conv's int8 kernel;
    # PReLU and its edge rewrites quantize the conv output on its own
    chains = conv_act_conv_chains(model)
    relu_fused = {first for first, act, _ in chains
                  if not isinstance(mods.get(act), nn.PReLU) and not getattr(mods.get(act), "scale_equivariant", False)}
    # int8 slopes, except after a conv kept in float (its activation stays in float with it)
    after_float = {act for first, act, _ in chains if first in keep_float}
    slopes = [m for n, m in model.named_modules() if getattr(m, "int8_mul_slopes", False) and n not in after_float]
    lo_in, hi_in, lo_out, hi_out = _observe(model, convs, tiles)
    # A conv reading the model input shares that tensor's quantizer with every other reader (a
    # residual or upsampling path): its range stays the observed one, or learning it would clip them.
    reads_input = _reads_model_input(model, convs, tiles[0])
    device = next(model.parameters()).device
    if output_range is None:
        with torch.no_grad():
            outs = [model(torch.from_numpy(t).to(device)) for t in tiles]
        output_range = (min(float(o.min()) for o in outs), max(float(o.max()) for o in outs))
    model_out = (min(0.0, float(output_range[0])), max(0.0, float(output_range[1])))
    in_fq = nn.ModuleDict({n.replace(".", "/"): _Range(lo_in[n], hi_in[n], learn=learn_ranges and n not in reads_input)
                           for n in convs}).to(device)
    out_fq = nn.ModuleDict({n.replace(".", "/"): _Range(lo_out[n], hi_out[n], learn=learn_ranges)
                            for n in convs if n not in relu_fused}).to(device)
    if tie_grids:
        for first, act, second in chains:
            a, b = first.replace(".", "/"), second.replace(".", "/")
            if getattr(mods.get(act), "output_on_input_grid", False) and a in out_fq and b in in_fq:
                in_fq[b] = out_fq[a]  # the same module: one range, learned from both places
    return FakeQuantized(model, convs, in_fq, out_fq, model_out, slopes, weights, activations)


@torch.no_grad()
def simulated_psnr(model: nn.Module, reference: nn.Module, tiles: list[np.ndarray],
                   keep_float: frozenset[str] = frozenset()) -> float:
    """Mean PSNR (dB, outputs clipped to [0, 1]) of ``model`` run w8a8 fake-quantized with its
    observed activation ranges, against ``reference`` on ``tiles``: what plain post-training
    quantization of ``model`` will give, without converting it."""
    model = copy.deepcopy(model).float().eval()
    reference = reference.float().eval()
    with w8a8_simulation(model, tiles, frozenset(keep_float)) as fq:
        return float(np.mean([psnr(fq(torch.from_numpy(t)).clamp(0, 1).numpy(), reference(torch.from_numpy(t)).clamp(0, 1).numpy())
                              for t in tiles]))


def quantization_finetune(model: nn.Module, reference: nn.Module, tiles: list[np.ndarray], steps: int = 300,
                          batch: int = 8, crop: int = 64, lr: float = 5e-5, range_lr: float = 3e-3, seed: int = 0,
                          range_margin: float = 1.0, augment: float = 0.0, tie_prelu_grids: bool = False,
                          keep_float: frozenset[str] = frozenset(), progress=None) -> FinetuneResult:
    """Fine-tune a copy of ``model`` so that its w8a8 fake-quantized output matches ``reference``
    (the original fp32 model) on random crops of ``tiles``; ``progress(step, loss)`` is called each
    step. ``range_lr=0`` keeps the observed min/max ranges. ``range_margin`` widens every learned
    range by that factor after training (both ends, the zero point in place): coarser steps on every
    photo, in exchange for less clipping where a photo's activations reach past what the
    calibration tiles showed (docs/benchmarks.md, "Clipping, not rounding"). ``augment`` is the
    probability that a training crop is made grayscale, and (separately) that its contrast is raised:
    old photos' stronger edges, seen in training, so that the learned ranges clip them less. With
    ``tie_prelu_grids``, a PReLU the target keeps in float (``output_on_input_grid``) shares one
    range with the conv output before it (``tied_prelu_grids`` in the report counts them)."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model = copy.deepcopy(model).float().eval()
    reference = reference.float().eval()
    simulation = w8a8_simulation(model, tiles, frozenset(keep_float), tie_grids=tie_prelu_grids)
    in_fq, out_fq = simulation.in_fq, simulation.out_fq
    ranges = list({id(r): r for r in [*in_fq.values(), *out_fq.values()]}.values())  # a tied range once
    tied = len(in_fq) + len(out_fq) - len(ranges)
    weights = list(model.parameters())
    groups = [{"params": weights, "lr": lr}]
    if range_lr > 0:
        groups.append({"params": [r.log_scale for r in ranges if r.log_scale.requires_grad], "lr": range_lr})
    opt = torch.optim.Adam(groups)
    for g in opt.param_groups:
        g["base_lr"] = g["lr"]
    losses = []
    with simulation as fq:
        for step in range(steps):
            x = random_crops(tiles, batch, crop, gen, augment)
            with torch.no_grad():
                target = reference(x)
            loss = F.mse_loss(fq(x), target)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            for g in opt.param_groups:  # cosine decay
                g["lr"] = g["base_lr"] * 0.5 * (1 + math.cos(math.pi * step / steps))
            opt.step()
            losses.append(float(loss.detach()))
            if progress is not None:
                progress(step + 1, losses[-1])
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for r in ranges:
            if r.log_scale.requires_grad:  # learned; a range shared with the model input stays as observed
                r.log_scale.add_(math.log(range_margin))
    first, last = np.mean(losses[: max(1, steps // 10)]), np.mean(losses[-max(1, steps // 10):])
    return FinetuneResult(
        model, simulation.input_ranges(), simulation.output_ranges(),
        {"steps": steps, "batch": batch, "crop": crop, "lr": lr, "range_lr": range_lr, "seed": seed,
         **({"range_margin": range_margin} if range_margin != 1.0 else {}),
         **({"augment": augment} if augment else {}),
         **({"tied_prelu_grids": tied} if tied else {}),
         "fake_quant_psnr_db_first": round(psnr_from_mse(float(first)), 2),
         "fake_quant_psnr_db_last": round(psnr_from_mse(float(last)), 2)},
        simulation)
