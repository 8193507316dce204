"""Training photos for every task: decode the data folders once, cut and augment patches.

A batch is a pure function of ``(seed, step)`` and the images (each task draws from
``np.random.default_rng`` seeded with them), so a resumed run sees exactly the batches an
uninterrupted one would have seen.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.image import list_images, read_image

MAX_HOLDOUT = 8  # held-out photos at most, when the count is automatic


@dataclass
class TrainingImages:
    """The decoded training photos (HxWx3 float32 RGB) and where they came from."""

    images: list[np.ndarray]
    paths: list[Path]
    fingerprint: str  # sha256 over the files' own sha256s, in load order
    skipped: list[str]  # "name (reason)" for files left out


def load_training_images(
    data_dirs: Sequence[str | os.PathLike], exclude: Iterable[str] = (), min_size: int = 1
) -> TrainingImages:
    """Decode every image directly inside ``data_dirs`` (sorted, in folder order).

    Files whose name is in ``exclude`` are skipped (in every folder), so are images smaller than
    ``min_size`` on a side and byte-identical duplicates (the same photo in two folders is
    loaded once). Raises :class:`BadInputError` when a folder is missing or nothing is left.
    """
    if not data_dirs:
        raise BadInputError("no training data folder given")
    excluded = set(exclude)
    images: list[np.ndarray] = []
    paths: list[Path] = []
    skipped: list[str] = []
    digests: list[str] = []
    seen: set[str] = set()
    for folder in map(Path, data_dirs):
        if not folder.is_dir():
            raise BadInputError(f"training data folder not found: {folder}")
        files = list_images(folder)
        if not files:
            raise BadInputError(f"training data folder has no images: {folder}")
        for path in files:
            if path.name in excluded:
                skipped.append(f"{path} (excluded)")
                continue
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            if digest in seen:
                skipped.append(f"{path} (duplicate)")
                continue
            photo = read_image(path)
            if min(photo.size) < min_size:
                skipped.append(f"{path} (smaller than {min_size} px)")
                continue
            seen.add(digest)
            digests.append(digest)
            images.append(photo.rgb)
            paths.append(path)
    if not images:
        names = ", ".join(str(Path(d)) for d in data_dirs)
        raise BadInputError(f"no usable training image (at least {min_size}x{min_size} px, not excluded) in: {names}")
    fingerprint = hashlib.sha256("".join(digests).encode()).hexdigest()
    return TrainingImages(images=images, paths=paths, fingerprint=fingerprint, skipped=skipped)


def image_folders(dirs: Sequence[str | os.PathLike]) -> list[Path]:
    """Each folder and, below it, every sub-folder that holds images (sorted): ``--data
    photos/`` takes all its collections. A folder with nothing in it is kept, so the
    loader reports it."""
    out: list[Path] = []
    for d in map(Path, dirs):
        found = [p for p in [d, *sorted(q for q in d.rglob("*") if q.is_dir())] if p.is_dir() and list_images(p)]
        out.extend(found or [d])
    return out


def holdout_count(n: int, holdout: int | None) -> int:
    """How many of ``n`` photos to hold out for validation: ``holdout``, or by default 10 % (1 to
    :data:`MAX_HOLDOUT`, none when there is a single photo)."""
    if holdout is None:
        return 0 if n < 2 else min(MAX_HOLDOUT, max(1, n // 10))
    if holdout < 0 or holdout >= n:
        raise BadInputError(f"holdout must be between 0 and {n - 1} (the data has {n} usable images), got {holdout}")
    return holdout


def augment(patch: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random horizontal flip and rotation by a multiple of 90 degrees (all 8 symmetries)."""
    if rng.random() < 0.5:
        patch = patch[:, ::-1]
    patch = np.rot90(patch, int(rng.integers(4)))
    return np.ascontiguousarray(patch)


augment_patch = augment  # the name sample_pair uses: its own ``augment`` argument switches it off


def random_patch(images: Sequence[np.ndarray], rng: np.random.Generator, size: int) -> np.ndarray:
    """A ``size`` x ``size`` crop of a random image at a random place (not augmented)."""
    img = images[int(rng.integers(len(images)))]
    h, w = img.shape[:2]
    y = int(rng.integers(h - size + 1))
    x = int(rng.integers(w - size + 1))
    return img[y : y + size, x : x + size]


def degrade(hr: np.ndarray, scale: int, rng: np.random.Generator, degradation: str) -> np.ndarray:
    """LR input for an HR patch with the named pipeline."""
    if degradation == "classic":
        from restorekit.degrade.synthetic import degrade_pair

        return degrade_pair(hr, scale, rng)
    from restorekit.degrade.second_order import second_order_pair

    return second_order_pair(hr, rng, scale)[0]


def sample_pair(images: Sequence[np.ndarray], rng: np.random.Generator, patch_size: int, scale: int,
                degradation: str, augment: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """(LR, HR) of one random crop: HR side ``patch_size * scale``."""
    hr = random_patch(images, rng, patch_size * scale)
    hr = augment_patch(hr, rng) if augment else np.ascontiguousarray(hr)
    return degrade(hr, scale, rng, degradation), hr
