"""ONNX Runtime backend: CPU, CUDA or TensorRT execution providers with fallback."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from restorekit.bundle.manifest import Manifest, TensorContract
from restorekit.core.errors import BadInputError, require
from restorekit.core.threads import session_threads

PROVIDER_CHAINS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
    "tensorrt": ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"],
}


def select_providers(requested: str, available: list[str]) -> tuple[list[str], list[str]]:
    """Providers to use for ``requested`` given what onnxruntime offers, and those that fell away."""
    if requested not in PROVIDER_CHAINS:
        raise BadInputError(f"unknown provider {requested!r}: choose one of {', '.join(PROVIDER_CHAINS)}")
    chain = PROVIDER_CHAINS[requested]
    chosen = [p for p in chain if p in available]
    missing = [p for p in chain if p not in available]
    return chosen or ["CPUExecutionProvider"], missing


class OnnxSession:
    """An onnxruntime InferenceSession behind the Session protocol."""

    backend = "onnx"

    def __init__(self, model_path: Path, input: TensorContract, output: TensorContract,
                 provider: str = "cpu", threads: int | None = None, trt_options: dict[str, str] | None = None):
        ort = require("onnxruntime", "runtime")
        providers, missing = select_providers(provider, ort.get_available_providers())
        if provider != "cpu" and missing and missing[0] == PROVIDER_CHAINS[provider][0]:
            warnings.warn(f"{missing[0]} is not available in this onnxruntime build; falling back to {providers[0]}",
                          RuntimeWarning, stacklevel=2)
        opts = ort.SessionOptions()
        opts.log_severity_level = 3
        # No spin-waiting between runs: spinning threads starve whatever runs next on a small CPU
        # (measured on 2 cores: the PyTorch reference timed between bundle runs takes 136 ms with
        # spinning, 88 ms without) and bring no speed to back-to-back tiles (47.7 vs 47.9 ms p50 at 256x256).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        opts.intra_op_num_threads = session_threads(threads)  # the cores this process may use, not the machine's
        opts.inter_op_num_threads = 1  # one graph at a time (sequential execution): no second pool
        if trt_options and "TensorrtExecutionProvider" in providers:
            Path(trt_options["trt_engine_cache_path"]).mkdir(parents=True, exist_ok=True)
            providers = [("TensorrtExecutionProvider", trt_options) if p == "TensorrtExecutionProvider" else p
                         for p in providers]
        try:
            self._sess = ort.InferenceSession(str(model_path), sess_options=opts, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise BadInputError(f"onnxruntime cannot load {model_path}: {str(exc).splitlines()[0]}") from exc
        from restorekit.runtime.session import ORT_DTYPES, check_model_tensor

        for declared, actual in ((input, self._sess.get_inputs()[0]), (output, self._sess.get_outputs()[0])):
            check_model_tensor(declared, ORT_DTYPES.get(actual.type, actual.type), list(actual.shape), str(model_path))
        self.input, self.output = input, output
        self._in_name = self._sess.get_inputs()[0].name
        shape = self._sess.get_inputs()[0].shape
        hw = shape[1:3] if input.layout == "NHWC" else shape[2:4]
        self.fixed_size = tuple(hw) if all(isinstance(d, int) for d in hw) else None
        self.device = f"onnxruntime {self._sess.get_providers()[0]}"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the model on an NCHW float32 batch; returns the output in the same convention."""
        from restorekit.runtime.session import from_model_output, to_model_input

        y = self._sess.run(None, {self._in_name: to_model_input(x, self.input)})[0]
        return from_model_output(y, self.output)


def open_session(model_path: Path, manifest: Manifest, provider: str = "cpu",
                 threads: int | None = None) -> OnnxSession:
    """Open an ONNX model file as a Session; TensorRT gets options derived from the manifest."""
    trt_options = None
    if provider == "tensorrt":
        from restorekit.runtime.tensorrt import tensorrt_options, trt_cache_dir

        trt_options = tensorrt_options(manifest, trt_cache_dir(manifest))
    return OnnxSession(model_path, manifest.input, manifest.output, provider=provider, threads=threads,
                       trt_options=trt_options)


def warm_tensorrt_cache(bundle_dir: Path, manifest: Manifest, cache_dir: Path) -> str:
    """Build ONNX Runtime's TensorRT engine of an ONNX bundle into ``cache_dir`` (one run at the
    profile's optimal shape); returns the session's device."""
    from restorekit.runtime.tensorrt import engine_plan, tensorrt_options

    plan = engine_plan(manifest)
    session = OnnxSession(Path(bundle_dir) / manifest.model_file, manifest.input, manifest.output,
                          provider="tensorrt", trt_options=tensorrt_options(manifest, cache_dir))
    session.run(np.zeros(plan.shape(plan.opt_hw), np.float32))
    return session.device
