"""Edge rewrites: module substitutions applied before export, each exact in fp32.

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

    def __init__(self, prelu: nn.PReLU):
        super().__init__()
        self.weight = nn.Parameter(prelu.weight.detach().clone(), requires_grad=False)

    def forward(self, x):
        a = self.weight.view(1, -1, 1, 1) if self.weight.numel() > 1 else self.weight
        return F.relu(x) - a * F.relu(-x)


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


#: name -> rewrite; ``TargetProfile.rewrites`` lists the names a target applies, in order.
REWRITES: dict[str, Callable[[nn.Module], tuple[nn.Module, list[str]]]] = {
    "prelu": prelu_to_relu_form,
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
