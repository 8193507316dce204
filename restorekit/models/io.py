"""restorekit's tensor contract around networks that have their own: every bundle takes and gives
float NCHW tensors with pixels in [0, 1], and call options that the original code passes at run
time are fixed here as constants so that the exported graph is deterministic.

- :class:`FaceNetIO`: GFPGAN / CodeFormer work in [-1, 1] and return ``(image, extras)``.
- :class:`ColorizerIO`: DDColor takes the gray photo rendered as RGB and returns CIELAB a*, b*
  in Lab units (about -128..127); the bundle returns them as (ab + 128) / 255 in [0, 1] (OpenCV's
  8-bit Lab encoding over 255), so fidelity, fp16 and int8 work on the same scale as pixels.
- :class:`MaskedInput`: LaMa takes the image and the hole mask as two tensors; the bundle takes
  one 4-channel tensor, RGB + mask (1 = hole), and returns the filled RGB image.
"""

from __future__ import annotations

from torch import nn

from restorekit.runtime.task_io import AB_OFFSET, AB_SPAN

#: Keyword arguments that make a face network deterministic and single-output at export:
#: GFPGAN's noise injection uses its stored noise buffers (not fresh ``randn`` on every call) and
#: skips the intermediate RGB pyramid; CodeFormer's fidelity weight ``w`` is baked in at 0.5.
FACE_CALL_KWARGS = {"GFPGAN": {"return_rgb": False, "randomize_noise": False}, "CodeFormer": {"weight": 0.5}}
FACE_SIZE = 512


class FaceNetIO(nn.Module):
    """RGB [0, 1] in and out around a face network that works in [-1, 1] and returns
    ``(image, extras)`` (GFPGAN, CodeFormer), with its call options fixed as constants."""

    def __init__(self, model: nn.Module, **call_kwargs):
        super().__init__()
        self.model, self.call_kwargs = model, call_kwargs

    def forward(self, x):
        """Call the face network with its fixed keyword arguments and return the image only."""
        y = self.model(x * 2.0 - 1.0, **self.call_kwargs)[0]
        return ((y + 1.0) * 0.5).clamp(0.0, 1.0)


class ColorizerIO(nn.Module):
    """DDColor behind restorekit's contract: the gray photo rendered as RGB in [0, 1] in, CIELAB
    a*, b* out as ``(ab + 128) / 255`` (2 channels, [0, 1] for any real colour)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        """Predicted a*, b* of the gray RGB input ``x``, scaled to [0, 1]."""
        return (self.model(x) + AB_OFFSET) / AB_SPAN


class MaskedInput(nn.Module):
    """An inpainting network (LaMa) behind one 4-channel input: RGB + mask (1 = hole)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x):
        """Fill the masked pixels of ``x[:, :3]`` where ``x[:, 3]`` is 1; the rest is kept."""
        return self.model(x[:, :3], x[:, 3:4])
