"""TensorRT for ONNX bundles (NVIDIA Jetson and GPUs): settings derived from the manifest.

Two ways to use TensorRT, one set of settings (``engine_plan``):

* ONNX Runtime's TensorRT execution provider (``restorekit run --provider tensorrt``):
  ``tensorrt_options`` gives its provider options — precision flags, engine and timing caches,
  and an optimisation profile for the dynamic H/W of ONNX bundles;
* a standalone engine built with the ``tensorrt`` Python package (``restorekit trt-build``), for
  trtexec, DeepStream or a C++ runtime.

Precision follows the bundle: fp16 bundles enable FP16; int8 (QDQ) bundles enable INT8, which
makes TensorRT take the scales from the Q/DQ nodes (explicit quantization, no calibration
table), and FP16 for the layers left unquantized; fp32 bundles enable neither.

An fp16 bundle whose fp16 safety check kept layers in fp32 (``recipe.fp16_kept_float``: their
values overflow fp16) must not have them lowered to fp16 again, which the FP16 flag allows: the
standalone engine is built strongly typed (each layer in its ONNX type, no FP16 flag), and ONNX
Runtime's provider, which has no such mode, runs that bundle without FP16 (correct, slower).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import asdict, dataclass
from pathlib import Path

from restorekit.bundle.manifest import Manifest
from restorekit.core.errors import BackendUnavailableError, BadInputError

MIN_PROFILE_SIDE = 64  # smallest H/W the optimisation profile admits
WORKSPACE_BYTES = 1 << 30  # 1 GiB: fits a Jetson Orin Nano's shared memory with room to spare
TENSORRT_INSTALL_HINT = ("on a Jetson, TensorRT's Python bindings come with JetPack (apt install python3-libnvinfer, "
                         "then use a venv created with --system-site-packages); on an x86 GPU machine: "
                         "pip install tensorrt")


@dataclass(frozen=True)
class EnginePlan:
    """What TensorRT is asked to build for a bundle."""

    input_name: str
    channels: int
    fp16: bool
    int8: bool
    strongly_typed: bool  # layers keep their ONNX types (fp16 bundles with layers kept in fp32); excludes fp16
    min_hw: tuple[int, int]
    opt_hw: tuple[int, int]
    max_hw: tuple[int, int]

    def shape(self, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The NCHW input shape of a ``hw`` profile point."""
        return (1, self.channels, hw[0], hw[1])


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def engine_plan(manifest: Manifest) -> EnginePlan:
    """Precision flags and the min/opt/max input profile for an ONNX bundle.

    A fixed-shape model gets that shape for all three. A dynamic one is run tile by tile
    (``manifest.tiling``), so opt = max = the tile, and min = 64 (rounded up to the model's size
    multiple) for photos smaller than a tile, which are run whole. A dynamic detector sees whole
    photos: min 64, opt 640 (the large-face pass), max 1600 (the detection cap).
    """
    if manifest.target != "onnx":
        raise BadInputError(f"TensorRT builds from ONNX bundles; this one is {manifest.target}-{manifest.precision}")
    if manifest.input.layout != "NCHW":
        raise BadInputError(f"TensorRT profile expects an NCHW input, the manifest says {manifest.input.layout}")
    shape = list(manifest.input.shape or [1, 3, None, None])
    channels = int(shape[1] or 3)
    h, w = shape[2], shape[3]
    if isinstance(h, int) and isinstance(w, int):
        fixed = (h, w)
        lo = opt = hi = fixed
    elif manifest.task == "detect":  # detectors see whole photos (runtime.detect): up to the long-side cap
        from restorekit.runtime.detect import LARGE_FACE_SIDE, MAX_DETECT_SIDE

        lo, opt, hi = (MIN_PROFILE_SIDE,) * 2, (LARGE_FACE_SIDE,) * 2, (MAX_DETECT_SIDE,) * 2
    else:
        tile = int(manifest.tiling.get("tile") or 256)
        mult = int(manifest.tiling.get("multiple_of") or 1)
        side = _round_up(max(MIN_PROFILE_SIDE, mult), mult)
        tile = _round_up(max(tile, side), mult)
        lo, opt, hi = (side, side), (tile, tile), (tile, tile)
    kept = manifest.precision == "fp16" and bool((manifest.recipe or {}).get("fp16_kept_float"))
    return EnginePlan(input_name=manifest.input.name, channels=channels,
                      fp16=manifest.precision != "fp32" and not kept,
                      int8=manifest.precision in ("int8", "w8a8", "w8a16", "mixed"), strongly_typed=kept,
                      min_hw=lo, opt_hw=opt, max_hw=hi)


def cache_root() -> Path:
    """``$RESTOREKIT_CACHE``, else ``$XDG_CACHE_HOME/restorekit``, else ``~/.cache/restorekit``."""
    if os.environ.get("RESTOREKIT_CACHE"):
        return Path(os.environ["RESTOREKIT_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "restorekit"


def trt_cache_dir(manifest: Manifest) -> Path:
    """Engine cache of one bundle: keyed by its model file's sha256, so a changed model never
    reuses a stale engine."""
    model = next((f for f in manifest.files if f.get("path") == manifest.model_file), None)
    sha = re.sub(r"[^0-9a-f]", "", str(model["sha256"]).lower())[:16] if model else "unsigned"
    # the manifest's name and precision are a stranger's text: one safe path component, never "../"
    label = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{manifest.name}-{manifest.precision}").strip("_") or "bundle"
    return cache_root() / "tensorrt" / f"{label[:80]}-{sha or 'unsigned'}"


def tensorrt_options(manifest: Manifest, cache_dir: Path) -> dict[str, str]:
    """ONNX Runtime TensorRT execution provider options for a bundle (all values strings)."""
    plan = engine_plan(manifest)
    dims = lambda hw: f"{plan.input_name}:" + "x".join(map(str, plan.shape(hw)))  # noqa: E731
    return {
        "trt_fp16_enable": str(plan.fp16),
        "trt_int8_enable": str(plan.int8),
        "trt_engine_cache_enable": "True",
        "trt_engine_cache_path": str(cache_dir),
        "trt_timing_cache_enable": "True",
        "trt_timing_cache_path": str(cache_dir),
        "trt_max_workspace_size": str(WORKSPACE_BYTES),
        "trt_profile_min_shapes": dims(plan.min_hw),
        "trt_profile_opt_shapes": dims(plan.opt_hw),
        "trt_profile_max_shapes": dims(plan.max_hw),
    }


def _import_tensorrt():
    try:
        import tensorrt  # noqa: F401  (NVIDIA's package; only present on GPU machines)
    except ImportError as exc:
        raise BackendUnavailableError(f"the tensorrt Python package is not installed: {TENSORRT_INSTALL_HINT}") from exc
    return tensorrt


def build_engine(bundle_dir: Path, manifest: Manifest, out_dir: Path) -> Path:
    """Build a serialized TensorRT engine for an ONNX bundle with the ``tensorrt`` package.

    Writes ``model.engine`` and ``engine.json`` (TensorRT version, flags, profile) into
    ``out_dir`` atomically; returns the engine path.
    """
    from restorekit.core.files import atomic_write_bytes, atomic_write_text

    trt = _import_tensorrt()
    plan = engine_plan(manifest)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)  # TensorRT 8; default in 10
    flags = 0 if explicit is None else 1 << int(explicit)
    if plan.strongly_typed:
        typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
        if typed is None:
            raise BackendUnavailableError(f"{bundle_dir} keeps layers in fp32 that overflow fp16 (manifest recipe "
                                          "fp16_kept_float): that needs a strongly typed network, TensorRT 10 or newer")
        flags |= 1 << int(typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse((bundle_dir / manifest.model_file).read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BadInputError(f"TensorRT cannot parse {bundle_dir / manifest.model_file}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if plan.fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    if plan.int8:
        config.set_flag(trt.BuilderFlag.INT8)
    profile = builder.create_optimization_profile()
    profile.set_shape(plan.input_name, plan.shape(plan.min_hw), plan.shape(plan.opt_hw), plan.shape(plan.max_hw))
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BadInputError(f"TensorRT could not build an engine for {bundle_dir} (see its log above)")
    out_dir.mkdir(parents=True, exist_ok=True)
    engine = out_dir / "model.engine"
    atomic_write_bytes(engine, bytes(serialized))
    info = {"tensorrt_version": trt.__version__, "bundle": str(bundle_dir), "model_sha256": manifest.files[0]["sha256"],
            **{k: list(v) if isinstance(v, tuple) else v for k, v in asdict(plan).items()}}
    atomic_write_text(out_dir / "engine.json", json.dumps(info, indent=2) + "\n")
    return engine


def check_tile(manifest: Manifest, tile: int | None) -> None:
    """A ``--tile`` for ONNX Runtime's TensorRT provider must lie in the engine's optimisation profile."""
    if manifest.target != "onnx" or tile is None:
        return
    plan = engine_plan(manifest)
    if not plan.min_hw[0] <= tile <= plan.max_hw[0]:
        raise BadInputError(f"with --provider tensorrt the tile must be {plan.min_hw[0]}..{plan.max_hw[0]} "
                            f"(the engine's optimisation profile), not {tile or 'whole image'}")


def tensorrt_backends() -> tuple[bool, bool]:
    """Whether ONNX Runtime has its TensorRT execution provider here, and whether the ``tensorrt``
    package imports; raises when neither does."""
    import importlib.util

    try:
        import onnxruntime as ort

        ort_trt = "TensorrtExecutionProvider" in ort.get_available_providers()
    except ImportError:
        ort_trt = False
    has_trt = importlib.util.find_spec("tensorrt") is not None
    if not ort_trt and not has_trt:
        raise BackendUnavailableError("TensorRT is not available here: onnxruntime has no TensorrtExecutionProvider "
                                      f"(install JetPack's onnxruntime-gpu) and {TENSORRT_INSTALL_HINT}")
    return ort_trt, has_trt

