"""restorekit's own edge-first restoration network (the built-in default model).

Plain 3x3 convolutions with ReLU, a fixed 1x1 "anchor" convolution that copies the input
to every sub-pixel (so the net learns a residual over nearest-neighbour upsampling), and a
pixel shuffle (ONNX DepthToSpace, Core ML pixel_shuffle, TFLite TRANSPOSE_CONV by a rewrite). No PReLU,
no normalisation, no attention: every op has an int8 kernel on ORT, XNNPACK and the ANE.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class EdgeRestoreNet(nn.Module):
    """Restore and upscale: ``head -> num_convs x (conv3x3 + ReLU) -> tail -> + anchor -> shuffle``.

    Input and output are NCHW float RGB in [0, 1]; output is ``scale`` times larger and
    clamped to [0, 1].
    """

    def __init__(self, in_channels: int = 3, channels: int = 48, num_convs: int = 6, scale: int = 2):
        super().__init__()
        self.in_channels = in_channels
        self.channels = channels
        self.num_convs = num_convs
        self.scale = scale
        sub = scale * scale
        self.head = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.body = nn.ModuleList(nn.Conv2d(channels, channels, 3, padding=1) for _ in range(num_convs))
        self.tail = nn.Conv2d(channels, in_channels * sub, 3, padding=1)
        anchor = torch.zeros(in_channels * sub, in_channels, 1, 1)
        for c in range(in_channels):
            anchor[c * sub : (c + 1) * sub, c] = 1.0
        self.register_buffer("anchor", anchor, persistent=False)
        # a module, not F.pixel_shuffle: a target's rewrite finds it (convert.rewrites)
        self.shuffle = nn.PixelShuffle(scale) if scale > 1 else nn.Identity()
        nn.init.zeros_(self.tail.weight)
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Restore (and upscale) an NCHW RGB batch in [0, 1]."""
        y = F.relu(self.head(x))
        for conv in self.body:
            y = F.relu(conv(y))
        y = self.tail(y) + F.conv2d(x, self.anchor)
        return torch.clamp(self.shuffle(y), 0.0, 1.0)

    @property
    def config(self) -> dict[str, int]:
        """Constructor arguments: stored in the safetensors metadata so a file rebuilds its net."""
        return {
            "in_channels": self.in_channels,
            "channels": self.channels,
            "num_convs": self.num_convs,
            "scale": self.scale,
        }
