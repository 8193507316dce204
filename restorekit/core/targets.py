"""The target table: every task, target, precision and fidelity bar, declared once.

Torch-free: the runtime, the bundle format, the converters and the CLI all read these lists.
"""

from __future__ import annotations

from dataclasses import dataclass

from restorekit.core.errors import BadInputError

#: Model tasks a bundle can carry.
TASKS = ("sr", "restore", "face", "colorize", "inpaint", "scratch", "detect")
#: Image-to-image tasks; a ``detect`` model (face detector) outputs ``[N, priors, values]`` instead.
IMAGE_TASKS = tuple(t for t in TASKS if t != "detect")

#: A bundle passes validation when its mean PSNR vs the fp32 PyTorch reference reaches this.
MIN_FIDELITY_DB = {"fp32": 60.0, "fp16": 45.0, "int8": 38.0, "w8a8": 38.0, "mixed": 38.0, "w8": 40.0, "w8a16": 40.0,
                   "palettize8": 40.0, "palettize6": 30.0, "palettize4": 25.0}
#: Every precision name, in the order tables list them (``int8`` is the w8a8 scheme under its short name).
PRECISIONS = tuple(MIN_FIDELITY_DB)
#: Precisions whose activations are calibrated on photos.
CALIBRATED = ("int8", "w8a8", "w8a16", "mixed")

_INTEGER = ("int8", "w8", "w8a8", "w8a16", "mixed")


@dataclass(frozen=True)
class TargetProfile:
    """What a target supports, how its bundle is laid out and how it is validated."""

    name: str
    model_file: str  # the model's file (or package directory) name inside a bundle
    precisions: tuple[str, ...]
    default_precisions: tuple[str, ...]  # what ``restorekit bundle`` builds when not told
    layout: str
    dynamic_shape: bool
    runs_here: str  # where predictions can run
    tasks: tuple[str, ...] = IMAGE_TASKS  # model tasks it converts
    rewrites: tuple[str, ...] = ()  # edge rewrites applied before export (``convert.rewrites.REWRITES``)
    int8_prelu_slopes: bool = False  # int8 multiplies a rewritten PReLU's slopes as an int8 constant
    # a rewritten PReLU runs in float between Q/DQ pairs, and its output may share its input's grid
    # (fine-tuned int8: positive values are then rounded once, not twice)
    prelu_output_on_input_grid: bool = False
    # int8 with split PReLUs (``rewrites.prelu_to_split_relu``) runs as fused int8 conv + ReLU here
    int8_prelu_split: bool = False
    # the fp16 precision computes in fp16; False: fp16 weights only (dequantized), float32 compute
    fp16_compute: bool = True

    @property
    def schemes(self) -> tuple[str, ...]:
        """The quantization schemes its quantizer implements (its precisions less fp32 and the ``int8`` alias)."""
        return tuple(p for p in self.precisions if p not in ("fp32", "int8"))

    @property
    def edge_key(self) -> tuple:
        """What makes this target's edge model (and so its int8 preparation) differ from another's."""
        return self.rewrites, self.int8_prelu_slopes, self.prelu_output_on_input_grid, self.int8_prelu_split

    def converts(self, task: str) -> bool:
        """Whether this target takes models of ``task``."""
        return task in self.tasks


TARGETS: dict[str, TargetProfile] = {
    # ORT's PRelu kernel is 6x slower than Max(x, Mul(x, a)); int8 keeps the Mul and Max in float
    "onnx": TargetProfile("onnx", "model.onnx", ("fp32", "fp16") + _INTEGER, ("fp32", "fp16", "int8"), "NCHW", True,
                          "any OS (onnxruntime)", TASKS, rewrites=("prelu",), prelu_output_on_input_grid=True,
                          int8_prelu_split=True),
    # full-integer TFLite runs the MUL + MAXIMUM in int8, the slopes one per-tensor int8 constant;
    # its fp16 is fp16 weights behind DEQUANTIZE ops, computed in float32 (LiteRT's CPU kernels)
    "tflite": TargetProfile("tflite", "model.tflite", ("fp32", "fp16") + _INTEGER, ("fp32", "fp16", "int8"), "NHWC",
                            False, "any OS (ai-edge-litert)", TASKS,
                            rewrites=("prelu", "gfpgan", "codeformer", "fft_matmul", "conv_transpose_crop", "compact_base",
                                      "pixel_shuffle"),
                            int8_prelu_slopes=True, fp16_compute=False),
    "coreml": TargetProfile("coreml", "model.mlpackage",
                            ("fp32", "fp16", "w8", "w8a8", "palettize4", "palettize6", "palettize8"), ("fp32", "fp16"),
                            "NCHW", False, "macOS only", TASKS, rewrites=("layernorm2d", "codeformer")),
}
#: Target -> model file name inside a bundle.
MODEL_FILES = {name: profile.model_file for name, profile in TARGETS.items()}


def check_target(target: str, precision: str) -> TargetProfile:
    """Validate a (target, precision) pair before any work starts; return the target's profile."""
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}: choose from {', '.join(TARGETS)}")
    profile = TARGETS[target]
    if precision not in profile.precisions:
        raise BadInputError(
            f"{target} does not support precision {precision!r} here: choose from {', '.join(profile.precisions)}"
        )
    return profile


def targets_for(task: str) -> list[str]:
    """The targets that take models of ``task``."""
    return [t for t, p in TARGETS.items() if p.converts(task)]
