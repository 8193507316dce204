"""``restorekit`` command line: the Typer app assembled from one module per command group.

Each command module only parses options and prints; the work is done by the library below it.
Heavy imports happen inside commands so ``--help`` is instant.
"""

from __future__ import annotations

import sys

import typer

from restorekit.cli import build, evaluate, restore, run, train
from restorekit.cli.common import err_console, user_errors
from restorekit.cli.zoo import zoo_app

app = typer.Typer(
    name="restorekit",
    help="Put photo-restoration networks on devices: convert, quantize, bundle, run and validate "
    "for ONNX (TensorRT), TFLite/LiteRT and Core ML.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

#: Every command, in the order ``restorekit --help`` lists them.
COMMANDS = (
    ("bundle", build.bundle),
    ("convert", build.convert),
    ("quantize", build.quantize),
    ("run", run.run),
    ("restore", restore.restore),
    ("eval", evaluate.eval_),
    ("bench", evaluate.bench),
    ("trt-build", run.trt_build),
    ("assess", restore.assess),
    ("degrade", restore.degrade),
    ("train", train.train),
    ("distill", train.distill),
    ("inspect", build.inspect),
)
for _name, _command in COMMANDS:
    app.command(_name)(user_errors(_command))
app.add_typer(zoo_app, name="zoo")


def main() -> None:
    """Console-script entry point."""
    import warnings

    from restorekit.core.memory import photo_arrays_on_small_pages

    photo_arrays_on_small_pages()  # new photo-sized arrays fault in fast (restorekit.core.memory)
    warnings.formatwarning = lambda msg, cat, *a, **k: f"warning: {msg}\n"
    try:
        app()
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
