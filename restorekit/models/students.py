"""Named student architectures for distillation: :class:`EdgeRestoreNet` presets.

Three sizes at three scales, named ``edge-{s,m,l}-x{1,2,4}``. Cost per *input* (LR) pixel of an
EdgeRestoreNet with ``c`` channels, ``n`` body convs and scale ``s`` is
``9 * (3c + n c^2 + 3 s^2 c)`` MACs (head + body + tail; the 1x1 anchor is a copy and is not
counted by :func:`restorekit.models.loader.count_macs`). The teacher reference, Real-ESRGAN
Compact (``realesr-animevideov3``: 64 feats, 16 convs, x4), costs 619.2 GMAC per LR megapixel
(619,200 MACs per pixel); S stays under 1/8 of that at every scale.

=======  ========  =====  =============  =============  =============  ====================
preset   channels  convs  x1 GMAC/MP     x2 GMAC/MP     x4 GMAC/MP     / Compact (x1/x2/x4)
=======  ========  =====  =============  =============  =============  ====================
edge-s   32        6      57.0           59.6           70.0           0.092 / 0.096 / 0.113
edge-m   48        6      127.0          130.9          146.4          0.205 / 0.211 / 0.237
edge-l   64        8      298.4          303.6          324.3          0.482 / 0.490 / 0.524
=======  ========  =====  =============  =============  =============  ====================

Parameters: 57 k / 60 k / 70 k (S), 127 k / 131 k / 147 k (M), 299 k / 304 k / 325 k (L),
against Compact's 621 k.

``edge-m-x2`` is the architecture of the built-in model (``restorekit-x2``).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass

from restorekit.core.errors import BadInputError

#: Real-ESRGAN Compact (64 feats, 16 convs, x4) in MACs per LR megapixel: the size reference.
COMPACT_MACS_PER_MEGAPIXEL = 9 * (3 * 64 + 16 * 64 * 64 + 64 * 3 * 16) * 1e6

#: preset -> (channels, num_convs)
PRESETS: dict[str, tuple[int, int]] = {"edge-s": (32, 6), "edge-m": (48, 6), "edge-l": (64, 8)}
SCALES = (1, 2, 4)


@dataclass(frozen=True)
class StudentSpec:
    """One named student: EdgeRestoreNet constructor arguments and its analytic cost."""

    name: str
    channels: int
    num_convs: int
    scale: int

    @property
    def config(self) -> dict[str, int]:
        """Constructor arguments of the student network."""
        return {"in_channels": 3, "channels": self.channels, "num_convs": self.num_convs, "scale": self.scale}

    @property
    def macs_per_megapixel(self) -> float:
        """MACs per input megapixel (what ``count_macs`` measures on the built net)."""
        c, n, s = self.channels, self.num_convs, self.scale
        return 9.0 * (3 * c + n * c * c + 3 * s * s * c) * 1e6


STUDENTS: dict[str, StudentSpec] = {
    f"{preset}-x{scale}": StudentSpec(f"{preset}-x{scale}", c, n, scale)
    for preset, (c, n) in PRESETS.items()
    for scale in SCALES
}


def student_names() -> list[str]:
    """Every registered student name (small to large, x1 to x4)."""
    return list(STUDENTS)


def student_spec(name: str) -> StudentSpec:
    """The :class:`StudentSpec` called ``name`` (case-insensitive); unknown names are bad input."""
    spec = STUDENTS.get(str(name).strip().lower())
    if spec is None:
        close = difflib.get_close_matches(str(name).lower(), list(STUDENTS), n=1, cutoff=0.5)
        hint = f"; did you mean '{close[0]}'?" if close else ""
        raise BadInputError(f"unknown student '{name}'{hint} (known: {', '.join(STUDENTS)})")
    return spec


def build_student(name: str):
    """A freshly initialised :class:`EdgeRestoreNet` for the student ``name`` (He-initialised
    convs, zero tail: it starts as nearest-neighbour upscaling)."""
    from restorekit.models.edgenet import EdgeRestoreNet

    model = EdgeRestoreNet(**student_spec(name).config)
    init_weights(model)
    return model


def init_weights(model) -> None:
    """He (fan-in, ReLU) initialisation of every conv but the last, zero biases.

    PyTorch's default conv init shrinks the signal layer after layer; with a deep plain ReLU
    stack and a zero-initialised tail, the last ReLUs then die early in training and the net
    stays stuck at its nearest-neighbour anchor. He init keeps the activations alive. The tail
    stays zero so training starts from the anchor (nearest-neighbour upscaling).
    """
    from torch import nn

    convs = [m for m in model.modules() if isinstance(m, nn.Conv2d)]
    for conv in convs[:-1]:
        nn.init.kaiming_normal_(conv.weight, mode="fan_in", nonlinearity="relu")
        nn.init.zeros_(conv.bias)
