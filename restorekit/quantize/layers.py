"""Layer queries shared by the int8 preparation and fine-tuning: the int8 weight grid, which
convs and activations chain, and running a model with hooks attached."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F


def int8_weight_scale(w: torch.Tensor, axis: int = 0, keepdim: bool = False) -> torch.Tensor:
    """Per-channel symmetric int8 scale ``max|w| / 127`` along ``axis`` (output channels): the
    weight grid ONNX Runtime and LiteRT use, and the one every int8 path here rounds onto."""
    dims = tuple(d for d in range(w.ndim) if d != axis)
    return (w.detach().abs().amax(dim=dims, keepdim=keepdim) / 127.0).clamp_min(1e-12)


def is_activation(m) -> bool:
    """ReLU, PReLU, or an edge rewrite of PReLU (anything with ``scale_equivariant = True``)."""
    return isinstance(m, (nn.ReLU, nn.PReLU)) or getattr(m, "scale_equivariant", False)


def plain_conv(m) -> bool:
    """A dense (ungrouped) zero-padded Conv2d: what equalization, GPTQ and fine-tuning handle."""
    return isinstance(m, nn.Conv2d) and m.groups == 1 and m.padding_mode == "zeros"


def conv_act_conv_chains(model: nn.Module) -> list[tuple[str, str, str]]:
    """(conv, activation, conv) module names chained with no other use of their outputs (torch.fx)."""
    import torch.fx as fx

    class _Tracer(fx.Tracer):  # edge rewrites of PReLU stay one node, like nn.PReLU
        def is_leaf_module(self, m, qualname):
            """Activations are leaves too."""
            return is_activation(m) or super().is_leaf_module(m, qualname)

    try:
        graph = _Tracer().trace(model)
    except Exception:  # data-dependent control flow: no equalization for this model
        return []
    mods = dict(model.named_modules())
    out = []
    for node in graph.nodes:
        if node.op != "call_module" or not plain_conv(mods.get(node.target)) or len(node.users) != 1:
            continue
        act = next(iter(node.users))
        is_act = ((act.op == "call_module" and is_activation(mods.get(act.target)))
                  or (act.op == "call_function" and act.target in (F.relu, torch.relu)))
        if not is_act or len(act.users) != 1:
            continue
        nxt = next(iter(act.users))
        if nxt.op == "call_module" and plain_conv(mods.get(nxt.target)):
            out.append((node.target, str(act.target), nxt.target))
    return out


@torch.no_grad()
def run_with_hooks(model: nn.Module, tiles: list[np.ndarray], hooks=(), pre_hooks=()) -> None:
    """Run ``model`` on each tile (on the model's device) with forward hooks and pre-hooks
    ``(module, fn)`` attached; they are removed afterwards, whatever happens."""
    param = next(model.parameters(), None)
    device = param.device if param is not None else torch.device("cpu")
    handles = ([m.register_forward_hook(fn) for m, fn in hooks]
               + [m.register_forward_pre_hook(fn) for m, fn in pre_hooks])
    try:
        for t in tiles:
            model(torch.from_numpy(t).to(device))
    finally:
        for h in handles:
            h.remove()
