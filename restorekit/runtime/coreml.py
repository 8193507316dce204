"""Core ML backend: predictions need macOS (coremltools cannot run models on Linux)."""

from __future__ import annotations

import platform
from pathlib import Path

import numpy as np

from restorekit.bundle.manifest import Manifest, TensorContract
from restorekit.core.errors import BackendUnavailableError, require

COREML_NEEDS_MACOS = "Core ML prediction needs macOS (coremltools can convert on Linux but not run models)"


class CoreMLSession:
    """A coremltools MLModel behind the Session protocol (fixed tile shape)."""

    backend = "coreml"

    def __init__(self, model_path: Path, input: TensorContract, output: TensorContract,
                 provider: str = "cpu", threads: int | None = None):
        if platform.system() != "Darwin":
            raise BackendUnavailableError(COREML_NEEDS_MACOS)
        ct = require("coremltools")
        units = {"cpu": ct.ComputeUnit.CPU_ONLY}.get(provider, ct.ComputeUnit.ALL)
        self._model = ct.models.MLModel(str(model_path), compute_units=units)
        self.input, self.output = input, output
        self.fixed_size = (int(input.shape[2]), int(input.shape[3]))
        self.device = f"Core ML ({units.name})"

    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the Core ML model on an NCHW float32 batch (macOS only)."""
        from restorekit.runtime.session import from_model_output, to_model_input

        outs = []
        for i in range(x.shape[0]):
            res = self._model.predict({self.input.name: to_model_input(x[i : i + 1], self.input)})
            outs.append(from_model_output(np.asarray(res[self.output.name]), self.output))
        return np.concatenate(outs, axis=0)


def open_session(model_path: Path, manifest: Manifest, provider: str = "cpu",
                 threads: int | None = None) -> CoreMLSession:
    """Open a .mlpackage as a Session (macOS only)."""
    return CoreMLSession(model_path, manifest.input, manifest.output, provider=provider, threads=threads)
