"""Runtime harness: run bundles on ONNX Runtime, LiteRT or Core ML, with tiling.

Needs only the ``restorekit[runtime]`` extra (numpy, OpenCV, onnxruntime, ai-edge-litert):
no torch. Backends are imported when a bundle of theirs is opened.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from restorekit.bundle.manifest import BUILD_TMP_PREFIX, REPLACED_PREFIX, Manifest, read_manifest
from restorekit.core.errors import BadInputError
from restorekit.core.image import Photo
from restorekit.runtime.session import Session


def open_session(target: str, model_path: Path, manifest: Manifest, provider: str = "cpu",
                 threads: int | None = None) -> Session:
    """Open ``model_path`` with the backend module for ``target`` (same signature for all)."""
    module = importlib.import_module(f"restorekit.runtime.{target}")
    return module.open_session(model_path, manifest, provider=provider, threads=threads)


@dataclass
class Bundle:
    """A bundle directory opened for inference."""

    path: Path
    manifest: Manifest
    session: Session

    def upscale(self, rgb: np.ndarray, tile: int | None = None, overlap: int | None = None,
                on_tile: Callable[[int, int], None] | None = None, out_dtype=np.float32) -> np.ndarray:
        """Run the bundle over an HxWx3 image (float, or uint8/uint16 samples) with the manifest's
        tiling planned for the image (:func:`~restorekit.runtime.tiling.planned_tile`), or overrides;
        the output is ``out_dtype`` (float32 unclipped, or clipped samples)."""
        from restorekit.runtime.tiling import check_overlap, check_requested_tile, planned_tile, run_tiled

        t = self.manifest.tiling
        if tile is not None:
            check_requested_tile(tile, self.session.fixed_size, t.get("multiple_of", 1))
        tile = planned_tile(t.get("tile"), tile, self.session.fixed_size)
        if overlap is not None:
            check_overlap(overlap, self.session.fixed_size[0] if self.session.fixed_size else tile)
        return run_tiled(
            self.session, rgb, self.manifest.scale, tile=tile,
            overlap=t.get("overlap", 32) if overlap is None else overlap,
            multiple_of=t.get("multiple_of", 1), on_tile=on_tile, out_dtype=out_dtype,
        )

    def tile_plan(self, h: int, w: int, tile: int | None = None, overlap: int | None = None) -> dict:
        """How :meth:`upscale` cuts an ``h`` x ``w`` image: ``{"tile": [height, width], "tiles": count}``."""
        from restorekit.runtime.tiling import planned_tile, tile_grid

        t = self.manifest.tiling
        th, tw, ys, xs = tile_grid(self.session.fixed_size, h, w,
                                   planned_tile(t.get("tile"), tile, self.session.fixed_size),
                                   t.get("overlap", 32) if overlap is None else overlap, t.get("multiple_of", 1))
        return {"tile": [th, tw], "tiles": len(ys) * len(xs)}

    def restore_photo(self, photo: Photo, tile: int | None = None, overlap: int | None = None,
                      on_tile: Callable[[int, int], None] | None = None) -> Photo:
        """Restore a Photo; alpha is resized to the output size and carried through. A photo kept
        in integer samples (``read_image(..., integer=True)``) gives integer samples of the same
        depth, streamed into the output tile row by tile row (no float copy of the output)."""
        import cv2

        integer = photo.rgb.dtype.kind == "u"
        rgb = self.upscale(photo.rgb, tile, overlap, on_tile, out_dtype=photo.rgb.dtype if integer else np.float32)
        if not integer:
            np.clip(rgb, 0.0, 1.0, out=rgb)  # in place: the output is new
        alpha = None
        if photo.alpha is not None:
            alpha = photo.alpha
            if rgb.shape[:2] != alpha.shape:
                alpha = cv2.resize(alpha, (rgb.shape[1], rgb.shape[0]), interpolation=cv2.INTER_LINEAR)
            alpha = np.clip(alpha, 0.0, 1.0)
        return Photo(rgb=rgb, alpha=alpha, bit_depth=photo.bit_depth, was_gray=photo.was_gray,
                     metadata=photo.metadata)


def load_bundle(path: str | os.PathLike, provider: str = "cpu", threads: int | None = None,
                verify: bool = True, allow_failed: bool = False) -> Bundle:
    """Read and checksum-verify a bundle's manifest, then open its model. A bundle that failed its
    build's gates (``metrics.gates_passed`` false) is refused unless ``allow_failed`` (eval, bench)."""

    path = Path(path)
    if path.resolve().name.startswith((BUILD_TMP_PREFIX, REPLACED_PREFIX)) and not allow_failed:
        raise BadInputError(f"{path} is an unfinished or replaced build that restorekit left behind (killed "
                            "midway), not a bundle: build it again (the next build removes it)")
    manifest = read_manifest(path, verify=verify)
    if manifest.metrics.get("gates_passed") is False and not allow_failed:
        raise BadInputError(f"{path} failed its quality gates when it was built (see its report.json, or "
                            "`restorekit eval` it): pass --allow-unvalidated to run it anyway")
    session = open_session(manifest.target, path / manifest.model_file, manifest, provider, threads)
    return Bundle(path=path, manifest=manifest, session=session)
