"""RetinaFace with a MobileNet-0.25 backbone: face boxes and 5 landmarks.

The network (Deng et al., "RetinaFace: Single-stage Dense Face Localisation in the Wild", 2019)
as published with MobileNet-0.25 weights (`mobilenet0.25_Final.pth`, MIT): the module names
below follow that checkpoint's state-dict layout (``body.stage1..3``, ``fpn``, ``ssh1..3``,
``ClassHead/BboxHead/LandmarkHead``) so it loads unchanged.

``forward`` returns one tensor ``[N, priors, 16]``: 4 box offsets, 2 class logits, 10 landmark
offsets per prior, so that any runtime Session (PyTorch, or a converted bundle) can carry it;
decoding into boxes and landmarks is numpy (``restorekit.runtime.detect``), torch-free.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

# Activation slope. The published mobilenet0.25_Final.pth (biubug6's Face-Detector-1MB-with-landmark)
# was trained with plain ReLU everywhere; Pytorch_Retinaface's variant of the same layout uses
# LeakyReLU(0.1), and with these weights that slope costs the landmarks 3x their accuracy and
# aligned faces most of their score (0.39 instead of 1.0 on ../shared/photos/faces).
LEAKY = 0.0
ARCHITECTURE = "RetinaFace-MobileNet0.25"
OUTPUT_WIDTH = 16  # per prior: 4 box offsets, 2 class logits, 10 landmark offsets


def _act() -> nn.Module:
    return nn.LeakyReLU(LEAKY, inplace=True) if LEAKY else nn.ReLU(inplace=True)


def _conv_bn(cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True, groups: int = 1) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(_act())
    return nn.Sequential(*layers)


def _depthwise_separable(cin: int, cout: int, stride: int) -> nn.Sequential:
    """3x3 depthwise conv + BN + act, then 1x1 pointwise conv + BN + act (indices 0,1,2 / 3,4,5)."""
    return nn.Sequential(
        nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False), nn.BatchNorm2d(cin), _act(),
        nn.Conv2d(cin, cout, 1, 1, 0, bias=False), nn.BatchNorm2d(cout), _act(),
    )


class MobileNet025(nn.Module):
    """The backbone: three stages with strides 8, 16 and 32 (64, 128 and 256 channels)."""

    def __init__(self):
        super().__init__()
        self.stage1 = nn.Sequential(
            _conv_bn(3, 8, stride=2), _depthwise_separable(8, 16, 1), _depthwise_separable(16, 32, 2),
            _depthwise_separable(32, 32, 1), _depthwise_separable(32, 64, 2), _depthwise_separable(64, 64, 1),
        )
        self.stage2 = nn.Sequential(_depthwise_separable(64, 128, 2),
                                    *[_depthwise_separable(128, 128, 1) for _ in range(5)])
        self.stage3 = nn.Sequential(_depthwise_separable(128, 256, 2), _depthwise_separable(256, 256, 1))

    def forward(self, x):
        """Depthwise-separable MobileNet features at strides 8, 16 and 32."""
        c1 = self.stage1(x)
        c2 = self.stage2(c1)
        return c1, c2, self.stage3(c2)


class FeaturePyramid(nn.Module):
    """1x1 lateral convs, top-down nearest upsampling and 3x3 merge convs (64 channels)."""

    def __init__(self, channels=(64, 128, 256), out: int = 64):
        super().__init__()
        self.output1, self.output2, self.output3 = (_conv_bn(c, out, k=1) for c in channels)
        self.merge1 = _conv_bn(out, out)
        self.merge2 = _conv_bn(out, out)

    def forward(self, feats):
        """Merge the three feature levels top-down."""
        p1, p2, p3 = self.output1(feats[0]), self.output2(feats[1]), self.output3(feats[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return p1, p2, p3


class ContextModule(nn.Module):
    """SSH context module: 3x3, 5x5 (two 3x3) and 7x7 (three 3x3) branches, concatenated."""

    def __init__(self, cin: int = 64, cout: int = 64):
        super().__init__()
        self.conv3X3 = _conv_bn(cin, cout // 2, act=False)
        self.conv5X5_1 = _conv_bn(cin, cout // 4)
        self.conv5X5_2 = _conv_bn(cout // 4, cout // 4, act=False)
        self.conv7X7_2 = _conv_bn(cout // 4, cout // 4)
        self.conv7x7_3 = _conv_bn(cout // 4, cout // 4, act=False)

    def forward(self, x):
        """Concatenate 3x3, 5x5 and 7x7 receptive fields."""
        b5 = self.conv5X5_1(x)
        b7 = self.conv7X7_2(b5)
        return F.relu(torch.cat([self.conv3X3(x), self.conv5X5_2(b5), self.conv7x7_3(b7)], dim=1))


class _Head(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1x1 = nn.Conv2d(cin, cout, 1)

    def forward(self, x):
        return self.conv1x1(x)


class RetinaFace(nn.Module):
    """RetinaFace-MobileNet0.25. Input: NCHW BGR float, 0-255 minus mean (104, 117, 123)."""

    ANCHORS = 2

    def __init__(self):
        super().__init__()
        self.body = MobileNet025()
        self.fpn = FeaturePyramid()
        self.ssh1, self.ssh2, self.ssh3 = ContextModule(), ContextModule(), ContextModule()
        a = self.ANCHORS
        self.ClassHead = nn.ModuleList(_Head(64, a * 2) for _ in range(3))
        self.BboxHead = nn.ModuleList(_Head(64, a * 4) for _ in range(3))
        self.LandmarkHead = nn.ModuleList(_Head(64, a * 10) for _ in range(3))

    def forward(self, x):
        """Raw ``[N, priors, 16]`` detections: box offsets, face logits, landmark offsets."""
        feats = self.fpn(self.body(x))
        feats = (self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2]))
        n = x.shape[0]

        def flat(heads, k):  # [N, A*k, H, W] -> [N, H*W*A, k] in prior order (y, x, anchor)
            return torch.cat([h(f).permute(0, 2, 3, 1).reshape(n, -1, k) for h, f in zip(heads, feats)], dim=1)

        return torch.cat([flat(self.BboxHead, 4), flat(self.ClassHead, 2), flat(self.LandmarkHead, 10)], dim=2)


class RetinaFaceDetector(nn.Module):
    """RetinaFace behind restorekit's standard input contract: NCHW RGB float in [0, 1].

    The network's own preprocessing (RGB -> BGR, x255, minus the BGR mean) is part of the graph,
    so a converted bundle takes the same input as every other bundle and the runtime needs no
    model-specific code. Output: ``[N, priors, 16]`` (see the module docstring)."""

    def __init__(self, net: RetinaFace):
        super().__init__()
        self.net = net
        self.register_buffer("bgr_mean", torch.tensor([104.0, 117.0, 123.0]).view(1, 3, 1, 1), persistent=False)

    def forward(self, x):
        """Detections on an RGB input in [0, 1] (the network's own BGR mean subtraction inside)."""
        return self.net(x.flip(1) * 255.0 - self.bgr_mean)


#: State-dict key prefixes that identify this RetinaFace layout (facexlib uses the same).
KEY_PREFIXES = ("body.stage1.", "fpn.output1.", "ssh1.", "ClassHead.0.", "BboxHead.0.", "LandmarkHead.0.")


def is_retinaface_state_dict(state: dict) -> bool:
    """True when the keys are those of RetinaFace-MobileNet0.25 (after a ``module.`` prefix)."""
    keys = [k.removeprefix("module.") for k in state]
    return all(any(k.startswith(p) for k in keys) for p in KEY_PREFIXES) and any(
        k.startswith("body.stage1.0.0.") for k in keys)


def retinaface_from_state_dict(state: dict, name: str = "checkpoint") -> RetinaFace:
    """Build RetinaFace-MobileNet0.25 from a state dict (strict: every weight must match)."""
    from restorekit.core.errors import BadInputError

    state = {k.removeprefix("module."): v for k, v in state.items()}
    model = RetinaFace()
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise BadInputError(f"{name} is not a RetinaFace-MobileNet0.25 checkpoint "
                            f"(missing {missing[:3]}, unexpected {list(unexpected)[:3]})")
    return model.eval()


def load_retinaface(path: str | Path) -> RetinaFaceDetector:
    """RetinaFace-MobileNet0.25 from its published checkpoint (``weights_only=True``), taking
    RGB in [0, 1] like every restorekit model."""
    from restorekit.core.errors import BadInputError

    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"RetinaFace weights not found: {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise BadInputError(f"cannot read RetinaFace weights {path}: not a PyTorch state dict that loads with "
                            "weights_only=True") from exc
    if not isinstance(state, dict):
        raise BadInputError(f"{path} is not a RetinaFace-MobileNet0.25 state dict")
    return RetinaFaceDetector(retinaface_from_state_dict(state.get("state_dict", state), str(path))).eval()
