"""``restorekit run | trt-build``: run a bundle on a photo; build its TensorRT engines."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from restorekit.cli.common import (AllowUnvalidatedOpt, BundleArg, KeepProfileOpt, OverwriteOpt, ProviderOpt,
                                   ThreadsOpt, err_console, out_console)


def run(
    bundle_dir: BundleArg,
    input: Annotated[Path, typer.Argument(help="Photo to restore (PNG/JPEG/TIFF; 8/16-bit, gray, RGB, RGBA).")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Output image (.png/.jpg/.tif).")],
    tile: Annotated[Optional[int], typer.Option("--tile", min=0, help="Tile size (0 = whole image; fixed-shape bundles always use their own).")] = None,
    overlap: Annotated[Optional[int], typer.Option("--overlap", min=0, help="Pixels shared by neighbouring tiles (feathered).")] = None,
    provider: ProviderOpt = "cpu",
    threads: ThreadsOpt = None,
    allow_unvalidated: AllowUnvalidatedOpt = False,
    overwrite: OverwriteOpt = False,
    keep_profile: KeepProfileOpt = False,
):
    """Run a bundle on one photo, tiled with feathered blending; the photo's metadata kept."""
    from rich.markup import escape
    from rich.progress import Progress

    from restorekit.core.image import check_output_path, read_image, write_photo
    from restorekit.runtime import load_bundle

    check_output_path(output, input, overwrite)
    photo = read_image(input, integer=True)  # samples stay uint8/uint16: tiles are converted one by one
    b = load_bundle(bundle_dir, provider=provider, threads=threads, allow_failed=allow_unvalidated)
    if provider == "tensorrt":
        from restorekit.runtime.tensorrt import check_tile

        check_tile(b.manifest, tile)
    with Progress(console=err_console, transient=True) as progress:
        task = progress.add_task(escape(f"{b.manifest.name} ({b.session.device})"), total=None)
        result = b.restore_photo(photo, tile=tile, overlap=overlap,
                                 on_tile=lambda d, t: progress.update(task, completed=d, total=t))
    write_photo(output, result, keep_profile=keep_profile)
    h, w = result.size
    meta = result.metadata
    out_console.print(f"wrote {output} ({w}x{h}{', alpha kept' if result.alpha is not None else ''}"
                      + (f", colours converted from {meta.converted_from} to sRGB"
                         + (" and back" if keep_profile else "") if meta.converted_from else "")
                      + (f", kept {'/'.join(meta.summary()['kept']).upper()}" if meta else "") + ")")
    for note in meta.notes:
        err_console.print(f"note: {note}")


def trt_build(
    bundle_dir: Annotated[Path, typer.Argument(metavar="BUNDLE", help="An ONNX bundle directory.")],
    cache: Annotated[Optional[Path], typer.Option("--cache", help="Engine cache directory (default: under $RESTOREKIT_CACHE or ~/.cache/restorekit/tensorrt).")] = None,
):
    """Build and cache TensorRT engines for an ONNX bundle (Jetson, NVIDIA GPUs)."""
    from restorekit.bundle.manifest import read_manifest
    from restorekit.runtime.tensorrt import (TENSORRT_INSTALL_HINT, build_engine, engine_plan, tensorrt_backends,
                                             trt_cache_dir)

    manifest = read_manifest(bundle_dir)
    plan = engine_plan(manifest)
    cache_dir = cache or trt_cache_dir(manifest)
    ort_trt, has_trt = tensorrt_backends()
    out_console.print(f"profile {plan.input_name}: min {plan.shape(plan.min_hw)}, opt {plan.shape(plan.opt_hw)}, "
                      f"max {plan.shape(plan.max_hw)}; fp16 {plan.fp16}, int8 {plan.int8}"
                      + ("; strongly typed (layers kept in fp32 by fp16 safety stay fp32)" if plan.strongly_typed else "")
                      + f"; cache {cache_dir}")
    if ort_trt:
        from restorekit.runtime.onnx import warm_tensorrt_cache

        with err_console.status("building ONNX Runtime's TensorRT engine (minutes on a Jetson) ..."):
            device = warm_tensorrt_cache(bundle_dir, manifest, cache_dir)
        out_console.print(f"warmed ONNX Runtime's engine cache in {cache_dir} ({device}); "
                          f"`restorekit run {bundle_dir} ... --provider tensorrt` reuses it")
    if has_trt:
        with err_console.status("building a standalone TensorRT engine ..."):
            engine = build_engine(Path(bundle_dir), manifest, cache_dir)
        out_console.print(f"wrote {engine} (for trtexec / DeepStream / your own TensorRT runtime)")
    else:
        out_console.print(f"no standalone engine: {TENSORRT_INSTALL_HINT}")
