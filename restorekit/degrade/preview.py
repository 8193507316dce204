"""What training sees, on one photo: each synthetic degradation mode of ``restorekit degrade``."""

from __future__ import annotations

import numpy as np

from restorekit.core.errors import BadInputError

#: damaged: aged look + scratches, dust, stains, tears; aged: the aged look only; print: colour-print
#: ageing; pair: the training input of a ``scale`` model; second-order: Real-ESRGAN-style two rounds.
MODES = ("damaged", "aged", "print", "pair", "second-order")
#: Modes whose result is smaller than the photo (the input of an upscaling model).
SCALED_MODES = ("pair", "second-order")
#: Smallest photo side the degradations take (per unit of --scale for the scaled modes): their blur
#: and noise kernels and the downscale need room.
MIN_DEGRADE_SIDE = 16


def check_mode(mode: str, mask: bool = False) -> None:
    """Refuse an unknown mode, or a defect mask asked of a mode that makes none."""
    if mode not in MODES:
        raise BadInputError(f"unknown --mode {mode!r}: choose {', '.join(MODES)}")
    if mask and mode != "damaged":
        raise BadInputError("--mask needs --mode damaged")


def degrade_preview(rgb: np.ndarray, mode: str, rng: np.random.Generator, scale: int = 2
                    ) -> tuple[np.ndarray, np.ndarray | None]:
    """The ``mode`` degradation of an RGB float photo, and (``damaged``) its HxW defect mask."""
    check_mode(mode)
    if mode in SCALED_MODES:
        from restorekit.degrade.second_order import second_order_pair
        from restorekit.degrade.synthetic import degrade_pair

        h, w = (rgb.shape[0] // scale) * scale, (rgb.shape[1] // scale) * scale
        return (degrade_pair(rgb[:h, :w], scale, rng) if mode == "pair"
                else second_order_pair(rgb[:h, :w], rng, scale)[0]), None
    if mode == "print":
        from restorekit.degrade.aging import apply_aging

        return apply_aging(rgb, rng), None
    from restorekit.degrade.synthetic import age_photo

    aged = age_photo(rgb, rng)
    if mode == "aged":
        return aged, None
    from restorekit.degrade.damage import damage_photo

    damaged = damage_photo(aged, rng)
    return damaged.image, damaged.defects
