"""restorekit: put photo-restoration networks on devices.

Data flow: models -> distill -> quantize -> convert -> bundle -> runtime -> eval.
The CLI in ``restorekit.cli`` is a thin layer over these packages.
"""

__version__ = "0.1.0"
