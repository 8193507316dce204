"""ModelSpec: what every later stage needs to know about a model, so none needs
architecture-specific branches. Torch-free."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class ModelSpec:
    """Typed description of a loaded restoration model."""

    name: str
    architecture: str
    task: str  # sr | restore | face | colorize | inpaint | scratch | detect
    scale: int
    in_channels: int = 3
    out_channels: int = 3
    value_range: tuple[float, float] = (0.0, 1.0)
    color_order: str = "RGB"
    fixed_size: int | None = None  # e.g. 512 for face models; None = any size
    multiple_of: int = 1
    licence: str = "unknown"
    params: int = 0
    macs_per_megapixel: float = 0.0  # multiply-accumulates per megapixel of *input*
    checkpoint_sha256: str | None = None
    checkpoint: str | None = None  # absolute path the model was loaded from
    tags: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """The spec as a JSON-ready dict."""
        return asdict(self)
