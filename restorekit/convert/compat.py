"""Per-target compatibility of a model, from the ops of its traced graph (``restorekit inspect``).

Static analysis: the model is traced once with ``torch.jit.trace`` and every op kind in the
inlined graph is matched against rules declared as data (``RULES``): what the op becomes on each
target, and whether it blocks the conversion, falls off the accelerator, or is handled (and how).
``restorekit bundle`` then measures what the analysis predicts.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

OK, HANDLED, WARN, BLOCK = "ok", "handled", "warn", "block"
_RANK = {OK: 0, HANDLED: 1, WARN: 2, BLOCK: 3}
MARK = {OK: "✓", HANDLED: "✓", WARN: "⚠", BLOCK: "✗"}

FFT_OPS = ("aten::fft_rfft2", "aten::fft_irfft2", "aten::fft_rfftn", "aten::fft_irfftn", "aten::fft_fft2",
           "aten::fft_ifft2", "aten::fft_fftn", "aten::fft_ifftn", "aten::fft_rfft", "aten::fft_irfft")
NOISE_OPS = ("aten::normal", "aten::normal_", "aten::randn", "aten::randn_like", "aten::rand", "aten::rand_like",
             "aten::bernoulli", "aten::bernoulli_")


@dataclass(frozen=True)
class Rule:
    """What ops matching ``ops`` mean on each target: ``{target: (level, message)}``."""

    pattern: str  # a short name for the finding
    ops: tuple[str, ...]
    targets: dict


_DISTILL = "distill to a plain-conv student (restorekit distill)"
RULES: tuple[Rule, ...] = (
    Rule("PReLU", ("aten::prelu",), {
        "onnx": (HANDLED, "PReLU: rewritten to Max(x, Mul(x, a)) as on TFLite (bit-exact; ONNX Runtime's PRelu "
                          "kernel is 6x slower); int8 keeps the Mul and Max in float between quantized convs"),
        "tflite": (HANDLED, "PReLU: rewritten to max(x, a*x), slopes > 1 by sign flips folded into the "
                            "convs around it (bit-exact; MUL + MAXIMUM run in int8 on XNNPACK and pass the GPU "
                            "delegate, which rejects GREATER+SELECT)"),
        "coreml": (OK, "prelu op"),
    }),
    Rule("PixelShuffle", ("aten::pixel_shuffle",), {
        "onnx": (OK, "DepthToSpace"),
        "tflite": (HANDLED, "PixelShuffle: the GPU delegate caps tensor rank at 4 — litert-torch lowers it to rank-4 "
                            "RESHAPE/TRANSPOSE"),
        "coreml": (OK, "pixel_shuffle op (no rank-6 reshape; Core ML caps rank at 5)"),
    }),
    Rule("PixelUnshuffle", ("aten::pixel_unshuffle",), {
        "onnx": (OK, "SpaceToDepth"),
        "tflite": (HANDLED, "PixelUnshuffle: lowered to rank-4 RESHAPE/TRANSPOSE"),
        "coreml": (OK, "pixel_unshuffle op"),
    }),
    Rule("FFT", FFT_OPS, {
        "onnx": (WARN, f"FFT (e.g. LaMa's Fourier convolutions): ONNX DFT runs on ONNX Runtime, TensorRT has no DFT — "
                       f"{_DISTILL} for Jetson"),
        "tflite": (BLOCK, f"FFT: no TFLite builtin op — {_DISTILL} (dilated convolutions, as Qualcomm did for LaMa)"),
        "coreml": (BLOCK, f"FFT: no Core ML op — {_DISTILL}"),
    }),
    Rule("noise", NOISE_OPS, {t: (BLOCK, "random noise injection at inference (e.g. GFPGAN's StyleGAN2 noise): needs the "
                                         "noise -> constant rewrite before export (not in this version)")
                              for t in ("onnx", "tflite", "coreml")}),
    Rule("PythonOp", ("prim::PythonOp",), {
        "onnx": (WARN, "custom autograd Function (e.g. NAFNet's LayerNorm2d): exports only through its symbolic"),
        "tflite": (BLOCK, "custom autograd Function: litert-torch cannot lower it — needs a standard-ops rewrite"),
        "coreml": (BLOCK, "custom autograd Function (PythonOp): coremltools cannot convert it — needs a standard-ops "
                          "rewrite"),
    }),
    Rule("attention", ("aten::scaled_dot_product_attention", "aten::softmax", "aten::_softmax"), {
        "onnx": (OK, "attention as MatMul/Softmax"),
        "tflite": (WARN, "attention (softmax + batched matmul): large BATCH_MATMULs fall back from the GPU delegate"),
        "coreml": (WARN, "attention: runs, but large windows fall off the Neural Engine to the GPU/CPU"),
    }),
    Rule("GridSample", ("aten::grid_sampler", "aten::grid_sampler_2d"), {
        "onnx": (OK, "GridSample (opset 16)"),
        "tflite": (BLOCK, "grid_sample: no TFLite builtin op"),
        "coreml": (WARN, "grid_sample -> resample (iOS 16+), not on the Neural Engine"),
    }),
    Rule("normalization", ("aten::layer_norm", "aten::group_norm", "aten::instance_norm"), {
        "onnx": (OK, "LayerNormalization / GroupNormalization"),
        "tflite": (WARN, "layer/group norm: decomposed into mean/variance ops, which stay float in int8 models"),
        "coreml": (OK, "layer_norm / instance_norm ops"),
    }),
)

#: What every model meets on each target, whatever its ops (docs/architecture.md, "Facts about the targets").
TARGET_NOTES = {
    "onnx": "dynamic height/width; TensorRT profiles need a minimum of at least 64x64 (restorekit uses 64)",
    "tflite": "static shapes: bundled at a fixed tile, one interpreter per shape",
    "coreml": "fixed tile shape (flexible RangeDim inputs fall off the Neural Engine); predictions need macOS",
}


@dataclass
class TargetReport:
    """One target: overall level and the findings that led to it."""

    target: str
    level: str
    findings: list[str]

    @property
    def mark(self) -> str:
        """The ✓ / ! / ✗ mark of this finding's level."""
        return MARK[self.level]


def traced_ops(module: torch.nn.Module, x: torch.Tensor) -> set[str]:
    """Every op kind in the inlined TorchScript graph of ``module`` traced on ``x``."""
    import warnings

    with torch.inference_mode(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.jit's deprecation notices: tracing is only used to read the ops
        traced = torch.jit.trace(module.eval(), x, check_trace=False, strict=False)
    return {node.kind() for node in traced.inlined_graph.nodes()}


def compatibility(module: torch.nn.Module, spec, size: tuple[int, int] | None = None) -> list[TargetReport]:
    """Per-target findings for ``module`` (see the module docstring)."""
    from restorekit.core.targets import TARGETS

    if size is None:
        side = spec.fixed_size or max(64, spec.multiple_of * 4)
        size = (side, side)
    try:
        ops = traced_ops(module, torch.rand(1, spec.in_channels, *size))
        trace_error = None
    except Exception as exc:  # a model that does not trace is itself a finding
        ops, trace_error = set(), str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    reports = []
    for target, profile in TARGETS.items():
        found = []
        if not profile.converts(spec.task):
            found.append((BLOCK, f"{spec.task} models go to "
                                 f"{', '.join(t for t, p in TARGETS.items() if p.converts(spec.task))} in this version"))
        if trace_error:
            found.append((BLOCK, f"torch.jit.trace failed ({trace_error}): converters that trace will fail too"))
        for rule in RULES:
            if ops.intersection(rule.ops) and target in rule.targets:
                found.append(rule.targets[target])
        level = max((lvl for lvl, _ in found), key=_RANK.get, default=OK)
        lines = [f"{MARK[lvl]} {msg}" for lvl, msg in sorted(found, key=lambda f: -_RANK[f[0]])]
        reports.append(TargetReport(target, level, lines + [f"· {TARGET_NOTES[target]}"]))
    return reports
