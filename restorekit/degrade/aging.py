"""More old-photo effects: cyan dye loss, silver mirroring, halftone print screen.

Same conventions as :mod:`restorekit.degrade.synthetic`: float32 RGB (or gray) images in [0, 1],
``effect(img, rng, cfg) -> img`` with all randomness from an ``np.random.Generator``, one config
dataclass per effect (``enabled``, ``prob``, ranges), and :func:`apply_aging` running them in
``order`` with one child generator per effect (switching one off leaves the others' draws as
they were).

Default ranges (:class:`AgingConfig`; chosen by eye for scans of real prints, not from a paper):

================  ===========================================================================
cyan dye loss     p 0.3: red density scaled by 1 - amount, amount 0.15-0.55 (the cyan dye of
                  1970s-80s chromogenic prints fades first; the print goes red/magenta, most in
                  the mid-tones and shadows)
silver mirroring  p 0.2: strength 0.35-0.8, edge band 12-35 % of the short side (plus 0-15 %
                  everywhere), smooth patch field of 3-8 cells, bluish silver-grey (0.62, 0.66,
                  0.74) x 0.85-1.1, on the dark tones ((1 - luma) ** 1.5)
halftone          p 0.15: AM dot screen, period 3-8 px, angle 0-90 deg, strength 0.35-0.9,
                  dot edge blur 0.3-0.8 px
================  ===========================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from restorekit.degrade.synthetic import luminance, to_float32, uniform

Range = tuple[float, float]


@dataclass
class CyanDyeLossConfig:
    """Cyan dye fade; ``amount`` = fraction of the red-channel (cyan) density lost."""

    enabled: bool = True
    prob: float = 0.3
    amount: Range = (0.15, 0.55)
    floor: float = 0.004  # darkest red value (max density ~2.4) so black gets a red cast too


@dataclass
class SilverMirroringConfig:
    """Silver mirroring; ``strength`` = max blend to ``colour``, ``edge_width`` = fraction of the
    short side the edge weight falls to ``edge_floor``, ``cells`` = patch field grid size."""

    enabled: bool = True
    prob: float = 0.2
    strength: Range = (0.35, 0.8)
    edge_width: Range = (0.12, 0.35)
    edge_floor: Range = (0.0, 0.15)
    cells: tuple[int, int] = (3, 8)
    colour: tuple[float, float, float] = (0.62, 0.66, 0.74)
    brightness: Range = (0.85, 1.1)
    dark_gamma: float = 1.5


@dataclass
class HalftoneConfig:
    """AM halftone screen; ``period`` px, ``angle`` deg, ``strength`` = blend weight of the
    screened luminance, ``blur`` = sigma (px) of the dot edges (ink spread, scanner optics)."""

    enabled: bool = True
    prob: float = 0.15
    period: Range = (3.0, 8.0)
    angle: Range = (0.0, 90.0)
    strength: Range = (0.35, 0.9)
    blur: Range = (0.3, 0.8)
    softness: float = 0.12  # anti-aliasing width of the dot edge, in tone units


def cyan_dye_loss(img: np.ndarray, rng: np.random.Generator, cfg: CyanDyeLossConfig) -> np.ndarray:
    """Cyan fade: ``R' = max(R, floor) ** (1 - a)``, i.e. the red optical density ``-log R``
    (set by the cyan dye) times ``1 - a``; lifts reds most in mid-tones and shadows. G, B kept."""
    a = uniform(rng, cfg.amount)
    if img.ndim == 2:
        return to_float32(img)
    out = to_float32(img).copy()
    out[:, :, 0] = np.maximum(out[:, :, 0], np.float32(cfg.floor)) ** np.float32(1.0 - a)
    return np.clip(out, 0.0, 1.0)


def _smooth_field(h: int, w: int, rng: np.random.Generator, cells: int) -> np.ndarray:
    """Smooth random field in [0, 1] with about ``cells`` blobs along the short side."""
    gh, gw = (cells, max(2, round(cells * w / h))) if h <= w else (max(2, round(cells * h / w)), cells)
    f = cv2.resize(rng.random((gh, gw)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    f = cv2.GaussianBlur(f, (0, 0), max(1.0, min(h, w) / (2.0 * cells)))
    f = (f - f.min()) / max(float(f.max() - f.min()), 1e-6)
    return f * f * (3 - 2 * f)  # smoothstep: patchier


def _edge_weight(h: int, w: int, width: float, floor: float) -> np.ndarray:
    """1 at the border falling to ``floor`` at ``width`` x short side inwards (smooth)."""
    rows, cols = np.arange(h), np.arange(w)
    d = np.minimum.outer(np.minimum(rows, rows[::-1]), np.minimum(cols, cols[::-1]))
    e = np.clip(1.0 - d / (width * min(h, w)), 0.0, 1.0) ** 2
    return (floor + (1.0 - floor) * e).astype(np.float32)


def silver_mirroring(img: np.ndarray, rng: np.random.Generator, cfg: SilverMirroringConfig) -> np.ndarray:
    """Bluish silver-grey metallic sheen: blend weight = strength x smooth patch field x darkness
    x edge weight, so dark areas near the print's edges are hit hardest."""
    h, w = img.shape[:2]
    s = uniform(rng, cfg.strength)
    edge = _edge_weight(h, w, uniform(rng, cfg.edge_width), uniform(rng, cfg.edge_floor))
    patches = _smooth_field(h, w, rng, int(rng.integers(cfg.cells[0], cfg.cells[1] + 1)))
    colour = np.asarray(cfg.colour, np.float32) * np.float32(uniform(rng, cfg.brightness))
    dark = (1.0 - luminance(img)) ** np.float32(cfg.dark_gamma)
    alpha = np.float32(s) * patches * dark * edge
    if img.ndim == 2:
        return np.clip(to_float32(img) * (1 - alpha) + colour.mean() * alpha, 0.0, 1.0)
    a = alpha[:, :, None]
    return np.clip(to_float32(img) * (1 - a) + colour * a, 0.0, 1.0)


# CDF of the spot function cos(a) + cos(b) over one screen cell: maps it to a uniform threshold,
# so the ink coverage of a cell equals its tone (correct tone reproduction).
_g = np.linspace(0, 2 * np.pi, 96, endpoint=False)
_SPOT_SORTED = np.sort((np.cos(_g)[:, None] + np.cos(_g)[None, :]).ravel()).astype(np.float32)
_SPOT_CDF = ((np.arange(_SPOT_SORTED.size) + 0.5) / _SPOT_SORTED.size).astype(np.float32)


def halftone(img: np.ndarray, rng: np.random.Generator, cfg: HalftoneConfig) -> np.ndarray:
    """AM halftone: a cosine dot screen of random period/angle/phase thresholds the luminance
    (dark dots grow with darkness), the dots are softened, and the screened luminance replaces
    the original with partial ``strength`` (colour offsets kept)."""
    h, w = img.shape[:2]
    period, theta = uniform(rng, cfg.period), np.deg2rad(uniform(rng, cfg.angle))
    s, sigma = uniform(rng, cfg.strength), uniform(rng, cfg.blur)
    pu, pv = rng.uniform(0, period, 2)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    u = xx * np.cos(theta) + yy * np.sin(theta) + pu
    v = -xx * np.sin(theta) + yy * np.cos(theta) + pv
    spot = np.cos(2 * np.pi * u / period) + np.cos(2 * np.pi * v / period)
    threshold = np.interp(spot, _SPOT_SORTED, _SPOT_CDF).astype(np.float32)  # dot centres -> 1
    lum = luminance(img)
    ht = np.clip((lum - threshold) / np.float32(cfg.softness) + 0.5, 0.0, 1.0)  # 1 = paper, 0 = ink
    if sigma > 0.0:
        ht = cv2.GaussianBlur(ht, (0, 0), sigma, borderType=cv2.BORDER_REFLECT_101)
    delta = np.float32(s) * (ht - lum)
    return np.clip(to_float32(img) + (delta[:, :, None] if img.ndim == 3 else delta), 0.0, 1.0)


EFFECTS = {"cyan_dye_loss": cyan_dye_loss, "silver_mirroring": silver_mirroring, "halftone": halftone}


@dataclass
class AgingConfig:
    """Which of these effects to apply, with their ranges; ``order`` is the order of application."""

    cyan_dye_loss: CyanDyeLossConfig = field(default_factory=CyanDyeLossConfig)
    silver_mirroring: SilverMirroringConfig = field(default_factory=SilverMirroringConfig)
    halftone: HalftoneConfig = field(default_factory=HalftoneConfig)
    order: tuple[str, ...] = ("cyan_dye_loss", "silver_mirroring", "halftone")

    def effects(self) -> list[tuple[str, Any]]:
        """(name, config) of each effect, in the order they are applied."""
        return [(name, getattr(self, name)) for name in self.order]


def apply_aging(img: np.ndarray, rng: np.random.Generator, config: AgingConfig | None = None) -> np.ndarray:
    """Apply ``config``'s effects in order (each if enabled and with probability ``prob``);
    one child generator per effect is drawn up front. Deterministic given ``rng``."""
    config = config or AgingConfig()
    seeds = rng.integers(0, 2**63 - 1, size=len(config.order))
    out = to_float32(img)
    for (name, cfg), seed in zip(config.effects(), seeds):
        child = np.random.default_rng(int(seed))
        if child.random() < cfg.prob and cfg.enabled:  # always drawn
            out = EFFECTS[name](out, child, cfg)
    return out
