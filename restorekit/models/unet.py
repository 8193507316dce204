"""ScratchUNet: a small edge-friendly U-Net for dense masks (scratches, dust, tears).

Plain 3x3 convs and ReLU only; downsampling by stride-2 convs, upsampling by a conv to 4x the
channels and depth-to-space (pixel shuffle), skips added (not concatenated). Every op has int8
kernels on ONNX Runtime, XNNPACK and the Neural Engine. Input: NCHW RGB in [0, 1], H and W
multiples of 4; output: NCHW 1-channel probability in [0, 1] (``logits`` gives the
pre-sigmoid values for training).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _conv(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, 1)


class ScratchUNet(nn.Module):
    """Two-level U-Net: ``width`` channels at full resolution, 2x and 4x that below."""

    def __init__(self, in_channels: int = 3, width: int = 16):
        super().__init__()
        w1, w2, w3 = width, 2 * width, 4 * width
        self.config = {"in_channels": in_channels, "width": width}
        self.in_channels, self.scale, self.multiple_of = in_channels, 1, 4
        self.enc1 = nn.ModuleList([_conv(in_channels, w1), _conv(w1, w1)])
        self.enc2 = nn.ModuleList([_conv(w1, w2, 2), _conv(w2, w2)])
        self.enc3 = nn.ModuleList([_conv(w2, w3, 2), _conv(w3, w3)])
        self.up3 = _conv(w3, w2 * 4)
        self.dec2 = _conv(w2, w2)
        self.up2 = _conv(w2, w1 * 4)
        self.dec1 = _conv(w1, w1)
        # modules, not F.pixel_shuffle: a target's rewrite finds them (convert.rewrites)
        self.shuffle3, self.shuffle2 = nn.PixelShuffle(2), nn.PixelShuffle(2)
        self.head = nn.Conv2d(w1, 1, 1)

    @staticmethod
    def _block(convs: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
        for conv in convs:
            x = F.relu(conv(x))
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel defect logits."""
        e1 = self._block(self.enc1, x)
        e2 = self._block(self.enc2, e1)
        e3 = self._block(self.enc3, e2)
        d2 = F.relu(self.dec2(F.relu(self.shuffle3(self.up3(e3))) + e2))
        d1 = F.relu(self.dec1(F.relu(self.shuffle2(self.up2(d2))) + e1))
        return self.head(d1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Per-pixel defect probability in [0, 1]."""
        return torch.sigmoid(self.logits(x))
