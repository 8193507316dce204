"""The PyTorch reference as a runtime Session (fp32, CUDA when torch sees one, else CPU)."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def reference_device() -> torch.device:
    """CUDA when available, else CPU. TF32 is disabled so the reference is true fp32."""
    if torch.cuda.is_available():
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        return torch.device("cuda")
    return torch.device("cpu")


class TorchSession:
    """An nn.Module behind the runtime Session protocol (full precision reference)."""

    backend = "torch"

    def __init__(self, module: nn.Module, fixed_size: tuple[int, int] | None = None,
                 device: torch.device | None = None):
        self.torch_device = device or reference_device()
        self.module = module.eval().float().to(self.torch_device)
        self.fixed_size = fixed_size
        name = torch.cuda.get_device_name(0) if self.torch_device.type == "cuda" else "CPU"
        self.device = f"PyTorch {torch.__version__} fp32 on {name}"

    @torch.inference_mode()
    def run(self, x: np.ndarray) -> np.ndarray:
        """Run the PyTorch model on an NCHW float32 batch."""
        t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(self.torch_device)
        y = self.module(t)
        if isinstance(y, (tuple, list)):
            y = y[0]
        return y.float().cpu().numpy()
