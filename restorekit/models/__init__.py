"""Loading and describing restoration models (needs torch).

``load_model(ref)`` accepts the built-in default (None / "default"), a checkpoint path
(.pth/.pt/.ckpt/.safetensors) and returns a :class:`LoadedModel` = nn.Module + ModelSpec.
"""

from restorekit.models.spec import ModelSpec

__all__ = ["ModelSpec"]
