"""fp16 safety: find the layers whose values do not fit fp16, so the ``fp16`` precision keeps them in fp32.

Large restoration networks (GFPGAN, CodeFormer, LaMa, DDColor) can carry intermediate values
beyond fp16's largest finite number (65504): converted to fp16 as a whole they turn a photo into
inf / NaN, a black or flat image. Before an fp16 conversion, :func:`fp16_unsafe_layers` runs the
fp32 PyTorch model on a few calibration tiles and watches every torch operation (a
``TorchFunctionMode``: convolutions, matmuls, norms, activations, additions, including the
functional ones inside an attention block's ``forward``); each operation belongs to the
innermost module running it, the same module the exporters record on the op (ONNX
``pkg.torch.onnx.name_scopes``, Core ML ``TORCHSCRIPT_MODULE_NAME`` scopes). A module whose
operations read or write a value above :data:`FP16_SAFE_LIMIT`, or whose own weights exceed
:data:`FP16_MAX`, is kept in fp32: its own ops (not those of its children) stay float, with casts
at the boundary.
"""

from __future__ import annotations

import contextlib
import copy

#: fp16's largest finite value.
FP16_MAX = 65504.0
#: A value above this (max |x| on the calibration tiles) keeps its ops in fp32: 8x (three binades)
#: of headroom below FP16_MAX, because a few calibration tiles do not show the worst a photo
#: brings, and the ops that read such a tensor accumulate sums of several terms of its size in
#: fp16 (convolution and matmul accumulators, norm statistics, residual additions).
FP16_SAFE_LIMIT = FP16_MAX / 8
#: Values this large are intentional infinities (attention masks of ``-finfo(float32).max``):
#: fp16's inf does the same job, as coremltools' own overflow check also assumes.
_INTENTIONAL_INF = 1e38
#: Calibration tiles the build gives the check when no calibrated precision loads its own.
FP16_CHECK_TILES = 8
#: The label of the model's own top-level ops (its root module, whose name is "").
TOP_LEVEL = "<top level>"
#: Tensor queries that compute nothing: neither watched nor cast.
_QUERIES = ("__get__", "size", "dim", "numel", "stride", "is_floating_point")
#: In-place tensor methods: their first argument is the tensor they change, never a cast copy.
_IN_PLACE_DUNDERS = {"__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
                     "__iand__", "__ior__", "__ixor__", "__imatmul__", "__setitem__"}


def label(module_name: str) -> str:
    """The name a module's kept ops are recorded under (``TOP_LEVEL`` for the root module)."""
    return module_name or TOP_LEVEL


def _max_abs(t) -> float:
    """Largest finite |value| of a float tensor, intentional infinities left out."""
    import torch

    if t.numel() == 0:
        return 0.0
    a = t.detach().abs()
    m = float(a.amax())
    if m >= _INTENTIONAL_INF or m != m:  # inf, NaN or a mask value: look at the ordinary values only
        a = torch.where(torch.isfinite(a) & (a < _INTENTIONAL_INF), a, torch.zeros((), dtype=a.dtype))
        m = float(a.amax())
    return m


def _tensors(obj):
    """The tensors in a (nested) argument or result."""
    import torch

    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _watch_mode(stack: list[str], peaks: dict[str, float], constants: set[int]):
    """A TorchFunctionMode recording, per innermost running module, the largest |value| its
    operations read or write (model parameters and buffers left out: weights are checked apart)."""
    import torch
    from torch.overrides import TorchFunctionMode
    from torch.utils.weak import WeakIdKeyDictionary

    seen = WeakIdKeyDictionary()  # tensor -> its max |x|, computed once

    def peak(t) -> float:
        if not t.is_floating_point() or id(t) in constants:
            return 0.0
        if t not in seen:
            seen[t] = _max_abs(t)
        return seen[t]

    class Watch(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if getattr(func, "__name__", "") in _QUERIES:
                return out
            m = max((peak(t) for t in (*_tensors(args), *_tensors(kwargs), *_tensors(out))
                     if isinstance(t, torch.Tensor)), default=0.0)
            if m > 0.0:
                where = stack[-1] if stack else ""
                peaks[where] = max(peaks.get(where, 0.0), m)
            return out

    return Watch()


@contextlib.contextmanager
def module_stack(model):
    """Hooks on every module of ``model`` keeping the names of the modules running now (innermost
    last; ``""`` is the top-level ``forward``) in the list this yields; removed on exit."""
    stack: list[str] = []

    def leave(_m, _a, _o) -> None:  # a forward hook that returns None keeps the output
        stack.pop()

    handles = []
    for name, m in model.named_modules():
        handles.append(m.register_forward_pre_hook(lambda _m, _a, n=name: stack.append(n)))
        handles.append(m.register_forward_hook(leave))
    try:
        yield stack
    finally:
        for h in handles:
            h.remove()


def activation_peaks(model, tiles) -> dict[str, float]:
    """``{module name: largest |value| its own operations read or write}`` over ``tiles`` (NCHW
    float32 arrays) run through ``model`` in fp32; ``""`` is the model's top-level ``forward``."""
    import torch

    peaks: dict[str, float] = {}
    constants = {id(p) for p in model.parameters()} | {id(b) for b in model.buffers()}
    inputs = [t if isinstance(t, torch.Tensor) else torch.from_numpy(t) for t in tiles]
    with module_stack(model) as stack, torch.inference_mode(), _watch_mode(stack, peaks, constants):
        for x in inputs:
            model(x)
    return peaks


def fp16_unsafe_layers(model, tiles, limit: float = FP16_SAFE_LIMIT,
                       activations: bool = True) -> dict[str, str]:
    """``{module label: why}`` of the modules whose ops must stay in fp32 in an fp16 model: their
    own weights or buffers exceed :data:`FP16_MAX`, or (``activations``: the target computes in
    fp16) their ops read or write a value above ``limit`` on ``tiles``. Labels are module names
    (:func:`label`: ``TOP_LEVEL`` for the model's own ops), in the model's definition order."""
    out: dict[str, str] = {}
    peaks = activation_peaks(model, tiles) if activations else {}
    for name, m in model.named_modules():
        weights = [t for t in (*m.parameters(recurse=False), *m.buffers(recurse=False)) if t.is_floating_point()]
        w = max((_max_abs(t) for t in weights), default=0.0)
        why = []
        if peaks.get(name, 0.0) > limit:
            why.append(f"activation max {peaks[name]:.3g} > {limit:.0f}")
        if w > FP16_MAX:
            why.append(f"weight max {w:.3g} > {FP16_MAX:.0f}")
        if why:
            out[label(name)] = "; ".join(why)
    return out


def scope_module(names: list[str]) -> str:
    """The label of the innermost module of an exported op's scope list, where the last entry
    names the op itself (ONNX ``pkg.torch.onnx.name_scopes``: full module names; Core ML
    ``TORCHSCRIPT_MODULE_NAME``: one attribute name per level, joined here with dots)."""
    return label(names[-2] if len(names) >= 2 else "")


def coreml_op_module(op) -> str | None:
    """The module label of a Core ML (MIL) op converted from TorchScript, or None when the op
    carries no TorchScript scope."""
    from coremltools.converters.mil.mil.scope import ScopeSource

    names = (getattr(op, "scopes", None) or {}).get(ScopeSource.TORCHSCRIPT_MODULE_NAME)
    if not names:
        return None
    return label(".".join(str(n) for n in names[:-1]))


def coreml_compute_precision(keep: dict[str, str] | None):
    """Core ML ``compute_precision`` for fp16 that keeps the ops of the ``keep`` modules in fp32."""
    import coremltools as ct

    if not keep:
        return ct.precision.FLOAT16
    return ct.transform.FP16ComputePrecision(op_selector=lambda op: coreml_op_module(op) not in keep)


def _precision_mode(stack: list[str], keep: set[str]):
    """A TorchFunctionMode running each torch operation in fp32 when the innermost module running
    it is in ``keep`` (labels), else in fp16: its float arguments (weights included) are cast to
    that type, as an fp16 program with those modules kept in fp32 casts them."""
    import torch
    from torch.overrides import TorchFunctionMode

    class Precision(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            name = getattr(func, "__name__", "")
            if name in _QUERIES:
                return func(*args, **(kwargs or {}))
            dtype = torch.float32 if label(stack[-1] if stack else "") in keep else torch.float16

            def cast(obj):
                if isinstance(obj, torch.Tensor):
                    return obj.to(dtype) if obj.dtype in (torch.float32, torch.float16) and obj.dtype != dtype else obj
                if type(obj) in (list, tuple):  # not torch.Size or named tuples: no tensors in those
                    return type(obj)(cast(o) for o in obj)
                return obj

            in_place = name in _IN_PLACE_DUNDERS or (name.endswith("_") and not name.endswith("__"))
            head, rest = (args[:1], args[1:]) if in_place else ((), args)
            return func(*head, *cast(tuple(rest)), **{k: cast(v) for k, v in (kwargs or {}).items()})

    return Precision()


def half_except(module, keep: dict[str, str] | list[str] | None = None):
    """A PyTorch stand-in for an fp16 program (fp16 input and output) that keeps the ops of the
    ``keep`` modules (labels, :func:`fp16_unsafe_layers`) in fp32: each op runs in fp16 unless
    the innermost module running it is kept, and values pass between kept ops in fp32. Without
    ``keep``: the module in fp16."""
    import torch

    if not keep:
        return copy.deepcopy(module).half().eval()
    keep = set(keep)

    class Mixed(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = copy.deepcopy(module).float().eval()

        def forward(self, x):
            with module_stack(self.net) as stack, _precision_mode(stack, keep):
                return self.net(x)

    return Mixed().eval()
