"""Old-photo damage with masks: scratches and hairs, dust specks, stains, torn corners.

Each effect draws on a float32 RGB image in [0, 1] and returns the damaged image and a mask of
the pixels it damaged, so the same call gives a scratch detector its training target and an
inpainting model its hole. All randomness comes from an ``np.random.Generator``; one child
generator per effect is drawn up front (as in ``degrade.run_pipeline``), so switching one effect
off leaves the others' random choices unchanged.

Parameter ranges (``DamageConfig`` defaults), in pixels of the image they are drawn on:

================  =====================================================================
scratches         1-6 per image (p 0.8): long, gently curved strokes (quadratic Bezier,
                  bow up to 12 % of the length) at any angle, mostly near-vertical
                  (film-transport scratches), width 0.7-2.5 px, opacity 0.5-1.0, 70 %
                  bright (emulsion scraped to the paper), 30 % dark
hairs             0-3 (p 0.5): thin (0.5-1.0 px) dark wiggly lines, 5-25 % of the diagonal
dust              20-250 specks (p 0.8): radius 0.4-2.5 px, round or elongated, 60 % bright
stains            1-3 blotches (p 0.3): smooth irregular areas, 5-20 % of the short side,
                  brown multiplicative tint (water/foxing), darker rim
torn corner       p 0.2: one corner missing behind a jagged edge, 5-18 % of the short side,
                  filled with paper white or scanner-bed black
================  =====================================================================
"""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

Range = tuple[float, float]


def _u(rng: np.random.Generator, r: Range) -> float:
    return float(rng.uniform(r[0], r[1]))


def _stroke_mask(h: int, w: int, points: np.ndarray, width: float) -> np.ndarray:
    """Soft mask (float32 0..1) of an anti-aliased polyline of ``width`` px, drawn at 4x and
    reduced, so sub-pixel widths come out as partial coverage."""
    ss = 4
    canvas = np.zeros((h * ss, w * ss), np.uint8)
    pts = np.round(points * ss).astype(np.int32).reshape(-1, 1, 2)
    cv2.polylines(canvas, [pts], False, 255, thickness=max(1, int(round(width * ss))), lineType=cv2.LINE_AA)
    return cv2.resize(canvas, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


def _blend(img: np.ndarray, alpha: np.ndarray, value) -> np.ndarray:
    a = alpha[:, :, None]
    return img * (1.0 - a) + np.asarray(value, np.float32) * a


def _bezier(p0, p1, p2, n: int = 200) -> np.ndarray:
    t = np.linspace(0.0, 1.0, n, dtype=np.float32)[:, None]
    return (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2


def scratches(img: np.ndarray, rng: np.random.Generator, c: "ScratchConfig") -> tuple[np.ndarray, np.ndarray]:
    """Long bright or dark curved scratches; returns (image, mask)."""
    h, w = img.shape[:2]
    diag = float(np.hypot(h, w))
    out, mask = img.copy(), np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(c.count[0], c.count[1] + 1))):
        vertical = rng.random() < c.vertical_prob
        angle = rng.normal(np.pi / 2, 0.12) if vertical else rng.uniform(0, np.pi)
        length = _u(rng, c.length) * diag
        centre = np.array([rng.uniform(0, w), rng.uniform(0, h)], np.float32)
        d = np.array([np.cos(angle), np.sin(angle)], np.float32)
        p0, p2 = centre - d * length / 2, centre + d * length / 2
        bow = rng.uniform(-1, 1) * c.bow * length
        p1 = centre + np.array([-d[1], d[0]], np.float32) * bow
        alpha = _stroke_mask(h, w, _bezier(p0, p1, p2), _u(rng, c.width)) * _u(rng, c.opacity)
        bright = rng.random() < c.bright_prob
        value = rng.uniform(0.88, 1.0) if bright else rng.uniform(0.0, 0.15)
        out = _blend(out, alpha, (value, value, value * (0.97 if bright else 1.0)))
        mask = np.maximum(mask, alpha)
    return np.clip(out, 0, 1), mask


def hairs(img: np.ndarray, rng: np.random.Generator, c: "HairConfig") -> tuple[np.ndarray, np.ndarray]:
    """Thin dark wiggly hairs/fibres lying on the print; returns (image, mask)."""
    h, w = img.shape[:2]
    diag = float(np.hypot(h, w))
    out, mask = img.copy(), np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(c.count[0], c.count[1] + 1))):
        n = 40
        length = _u(rng, c.length) * diag
        heading = rng.uniform(0, 2 * np.pi) + np.cumsum(rng.normal(0, 0.25, n))  # a random walk in angle
        steps = np.stack([np.cos(heading), np.sin(heading)], 1) * (length / n)
        pts = np.array([rng.uniform(0, w), rng.uniform(0, h)], np.float32) + np.cumsum(steps, 0)
        alpha = _stroke_mask(h, w, pts.astype(np.float32), _u(rng, c.width)) * _u(rng, c.opacity)
        out = _blend(out, alpha, rng.uniform(0.0, 0.12))
        mask = np.maximum(mask, alpha)
    return np.clip(out, 0, 1), mask


def dust(img: np.ndarray, rng: np.random.Generator, c: "DustConfig") -> tuple[np.ndarray, np.ndarray]:
    """Dust specks and small spots, bright or dark; returns (image, mask)."""
    h, w = img.shape[:2]
    ss = 4
    bright = np.zeros((h * ss, w * ss), np.uint8)
    dark = np.zeros_like(bright)
    for _ in range(int(rng.integers(c.count[0], c.count[1] + 1))):
        r = _u(rng, c.radius) * ss
        axes = (max(1, int(r)), max(1, int(r * rng.uniform(0.4, 1.0))))
        centre = (int(rng.uniform(0, w * ss)), int(rng.uniform(0, h * ss)))
        target = bright if rng.random() < c.bright_prob else dark
        cv2.ellipse(target, centre, axes, float(rng.uniform(0, 180)), 0, 360, 255, -1, cv2.LINE_AA)
    shrink = lambda m: cv2.resize(m, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0  # noqa: E731
    a_bright, a_dark = shrink(bright) * _u(rng, c.opacity), shrink(dark) * _u(rng, c.opacity)
    out = _blend(_blend(img, a_bright, 0.95), a_dark, 0.05)
    return np.clip(out, 0, 1), np.maximum(a_bright, a_dark)


def stains(img: np.ndarray, rng: np.random.Generator, c: "StainConfig") -> tuple[np.ndarray, np.ndarray]:
    """Water stains / foxing: smooth irregular brown blotches with a darker rim."""
    h, w = img.shape[:2]
    short = min(h, w)
    field_ = np.zeros((h, w), np.float32)
    for _ in range(int(rng.integers(c.count[0], c.count[1] + 1))):
        radius = _u(rng, c.size) * short
        blob = np.zeros((h, w), np.float32)
        cv2.circle(blob, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), max(2, int(radius)), 1.0, -1)
        # an irregular outline: perturb with low-frequency noise, then smooth
        noise = cv2.resize(rng.random((8, 8)).astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
        blob = cv2.GaussianBlur(blob * (0.6 + 0.8 * noise), (0, 0), max(1.0, radius / 3))
        field_ = np.maximum(field_, (blob > 0.35).astype(np.float32) * np.clip(blob, 0, 1))
    inside = cv2.GaussianBlur((field_ > 0).astype(np.float32), (0, 0), 1.5)
    rim = np.clip(inside - cv2.GaussianBlur(inside, (0, 0), 3.0), 0, 1) * 3.0
    strength = _u(rng, c.strength)
    tint = np.array([0.93, 0.80, 0.58], np.float32)  # brown: multiplies blue most
    gain = 1.0 - (inside * strength + rim * strength)[:, :, None] * (1.0 - tint)
    return np.clip(img * gain, 0, 1), np.clip(inside, 0, 1)


def torn_corner(img: np.ndarray, rng: np.random.Generator, c: "TearConfig") -> tuple[np.ndarray, np.ndarray]:
    """One missing corner behind a jagged tear line; returns (image, mask)."""
    h, w = img.shape[:2]
    size = _u(rng, c.size) * min(h, w)
    corner = int(rng.integers(0, 4))
    n = 12
    t = np.linspace(0, 1, n)
    jag = rng.normal(0, size * 0.06, n)
    # tear line from a point on one edge to a point on the other, in top-left corner coordinates
    a, b = size * rng.uniform(0.7, 1.3), size * rng.uniform(0.7, 1.3)
    line = np.stack([a * (1 - t) + jag * 0.7, b * t + jag * 0.7], 1)
    line[0, 1], line[-1, 0] = -1.0, -1.0  # start on the top edge, end on the left edge
    poly = np.vstack([[-1.0, -1.0], line])
    if corner in (1, 2):
        poly[:, 0] = w - 1 - poly[:, 0]
    if corner in (2, 3):
        poly[:, 1] = h - 1 - poly[:, 1]
    mask = np.zeros((h, w), np.uint8)
    cv2.fillPoly(mask, [np.round(poly).astype(np.int32)], 1, cv2.LINE_AA)
    m = mask.astype(np.float32)
    fill = rng.uniform(0.9, 1.0) if rng.random() < c.paper_prob else rng.uniform(0.0, 0.08)
    return np.clip(_blend(img, m, fill), 0, 1), m


@dataclass
class ScratchConfig:
    """Long thin scratches across the emulsion (bright or dark, slightly bowed)."""

    enabled: bool = True
    prob: float = 0.8
    count: tuple[int, int] = (1, 6)
    length: Range = (0.25, 0.9)  # fraction of the image diagonal
    width: Range = (0.7, 2.5)
    opacity: Range = (0.5, 1.0)
    bow: float = 0.12
    vertical_prob: float = 0.7
    bright_prob: float = 0.7


@dataclass
class HairConfig:
    """Short curly hairs and fibres lying on the print."""

    enabled: bool = True
    prob: float = 0.5
    count: tuple[int, int] = (0, 3)
    length: Range = (0.05, 0.25)
    width: Range = (0.5, 1.0)
    opacity: Range = (0.5, 0.9)


@dataclass
class DustConfig:
    """Dust specks: small bright or dark dots."""

    enabled: bool = True
    prob: float = 0.8
    count: tuple[int, int] = (20, 250)
    radius: Range = (0.4, 2.5)
    opacity: Range = (0.6, 1.0)
    bright_prob: float = 0.6


@dataclass
class StainConfig:
    """Water and foxing stains: soft-edged discoloured blotches."""

    enabled: bool = True
    prob: float = 0.3
    count: tuple[int, int] = (1, 3)
    size: Range = (0.05, 0.20)  # radius, fraction of the short side
    strength: Range = (0.3, 0.8)


@dataclass
class TearConfig:
    """Torn-off corners behind a jagged tear line."""

    enabled: bool = True
    prob: float = 0.2
    size: Range = (0.05, 0.18)
    paper_prob: float = 0.6


#: Effects whose mask a scratch detector must find (stains are tone damage, restored globally).
DEFECT_EFFECTS = ("scratches", "hairs", "dust", "torn_corner")
_APPLY = {"stains": stains, "scratches": scratches, "hairs": hairs, "dust": dust, "torn_corner": torn_corner}


@dataclass
class DamageConfig:
    """Which damage to draw and its ranges; ``order`` is the drawing order."""

    stains: StainConfig = field(default_factory=StainConfig)
    scratches: ScratchConfig = field(default_factory=ScratchConfig)
    hairs: HairConfig = field(default_factory=HairConfig)
    dust: DustConfig = field(default_factory=DustConfig)
    torn_corner: TearConfig = field(default_factory=TearConfig)
    order: tuple[str, ...] = ("stains", "scratches", "hairs", "dust", "torn_corner")


@dataclass
class Damaged:
    """A damaged image, each effect's soft mask (0..1), and the defect mask (bool)."""

    image: np.ndarray
    masks: dict[str, np.ndarray]

    @property
    def defects(self) -> np.ndarray:
        """Pixels covered by scratches, hairs, dust or tears (soft coverage >= 0.25)."""
        h, w = self.image.shape[:2]
        out = np.zeros((h, w), bool)
        for name in DEFECT_EFFECTS:
            if name in self.masks:
                out |= self.masks[name] >= 0.25
        return out


def damage_photo(img: np.ndarray, rng: np.random.Generator, config: DamageConfig | None = None) -> Damaged:
    """Draw old-photo damage on an RGB (or gray) float image in [0, 1]; deterministic given ``rng``."""
    config = config or DamageConfig()
    img = np.asarray(img, np.float32)
    gray = img.ndim == 2
    out = np.repeat(img[:, :, None], 3, axis=2) if gray else img.copy()
    seeds = rng.integers(0, 2**63 - 1, size=len(config.order))
    masks = {}
    for name, seed in zip(config.order, seeds):
        cfg = getattr(config, name)
        child = np.random.default_rng(int(seed))
        if child.random() < cfg.prob and cfg.enabled:
            out, masks[name] = _APPLY[name](out, child, cfg)
    if gray:
        out = out.mean(axis=2)
    return Damaged(image=out.astype(np.float32), masks=masks)
