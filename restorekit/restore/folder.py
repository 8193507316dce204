"""Restore one photo or a folder of photos: a bad photo in a folder is named and skipped, and a
re-run skips the outputs already written (they are written atomically: present means finished)."""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from restorekit.core.errors import BadInputError, RestorekitError
from restorekit.core.files import check_writable_path, remove_abandoned_temps
from restorekit.core.image import (IMAGE_SUFFIXES, WRITE_SUFFIXES, check_output_path, read_image, write_image,
                                   write_photo)
from restorekit.restore.models import PipelineModels
from restorekit.restore.pipeline import RestoreOptions, restore_photo, side_by_side

LOG_KIND, LOG_SCHEMA_VERSION = "restorekit.restore", 1


@dataclass
class Jobs:
    """The (input, output) pairs of one run; ``folder`` when the input is a folder (then ``output`` is one too);
    ``keep_profile``: outputs written back in their photo's own colour profile rather than sRGB."""

    pairs: list[tuple[Path, Path]]
    folder: bool
    output: Path
    keep_profile: bool = False


def plan_jobs(input: Path, output: Path, compare: Path | None = None, overwrite: bool = False,
              keep_profile: bool = False) -> Jobs:
    """The photos to restore and where each goes, checked before any model loads; ``compare`` (an
    original | result image) is for a single photo. The output is never the input (a folder's
    restored photos would replace or be taken for its originals) unless ``overwrite`` (one photo)."""
    input, output = Path(input), Path(output)
    if not input.exists():
        raise BadInputError(f"input not found: {input}")
    folder = input.is_dir()
    if folder:
        if compare is not None:
            raise BadInputError("--compare is for a single photo")
        if not output.parent.is_dir():
            raise BadInputError(f"output directory does not exist: {output.parent}")
        if output.exists() and output.resolve() == input.resolve():
            raise BadInputError(f"the output folder {output} is the input folder: restored photos would be written "
                                "over (or taken for) the originals; choose another folder")
        # like list_images, but a dangling link or a folder named like a photo is kept, to be reported
        # as a failure with its reason rather than passed over in silence
        photos = [p for p in sorted(input.iterdir()) if not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES]
        names = {p.name for p in photos}
        pairs = [(p, output / output_name(p, names)) for p in photos]
    else:
        check_output_path(output, input, overwrite)
        pairs = [(input, output)]
    if compare is not None:
        check_writable_path(compare)
    return Jobs(pairs, folder, output, keep_profile)


def output_name(photo: Path, names: set[str]) -> str:
    """The output file name of a photo in a folder run: its own name where restorekit writes that
    format, else ``.png`` in place of a suffix it reads but does not write (``.webp``, ``.bmp``),
    or after it (``a.webp.png``) when the folder also holds that name."""
    if photo.suffix.lower() in WRITE_SUFFIXES:
        return photo.name
    png = photo.stem + ".png"
    return png if png not in names else photo.name + ".png"


def finished(output: Path) -> bool:
    """An output a re-run can skip: a non-empty file with a readable image header (outputs are
    written atomically, so one that reads is whole; a 0-byte or foreign file is redone)."""
    import numpy as np

    from restorekit.core.image import header_size

    try:
        return output.is_file() and output.stat().st_size > 0 and header_size(np.fromfile(str(output), np.uint8,
                                                                                          count=65536)) is not None
    except OSError:
        return False


@dataclass
class BatchResult:
    """What a run did: one log per restored photo, the outputs found finished, the photos that failed."""

    logs: list[dict] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def to_json(self, models: PipelineModels) -> dict:
        """The run's JSON log (``restore --json``)."""
        return {"schema_version": LOG_SCHEMA_VERSION, "kind": LOG_KIND,
                "restorer": models.restorer.name if models.restorer else None,
                "detector": models.detector.name if models.detector else None,
                "photos": self.logs, "skipped_finished": self.skipped,
                "failed": [{"input": n, "error": e} for n, e in self.failures]}


def read_photo(src: Path):
    """A photo as the pipeline takes it: 8- and 16-bit samples as they are (stages convert what they need)."""
    return read_image(src, integer=True)


def _restore_one(src: Path, dst: Path, models: PipelineModels, options: RestoreOptions, compare: Path | None,
                 on_stage: Callable[[str], None], keep_profile: bool = False) -> dict:
    """Restore ``src`` into ``dst`` (and the side-by-side ``compare``); the photo's log entry."""
    return _write_one(src, dst, *_restore_read(read_photo(src), models, options, on_stage), compare, keep_profile)


def _restore_read(photo, models: PipelineModels, options: RestoreOptions, on_stage: Callable[[str], None]):
    """The pipeline on a decoded photo: (the photo, the pipeline's result)."""
    return photo, restore_photo(photo, models.restorer, models.detector, options, on_stage=on_stage,
                                face_detector=models.face_detector, references=models.references,
                                upscaler=models.upscaler, face_restorer=models.face_restorer,
                                colorizer=models.colorizer, inpainter=models.inpainter)


def _write_one(src: Path, dst: Path, photo, result, compare: Path | None, keep_profile: bool) -> dict:
    """Encode and write a restored photo (and ``compare``); its log entry."""
    write_photo(dst, result.photo, keep_profile=keep_profile)
    if compare is not None:
        write_image(compare, side_by_side(photo.rgb, result.photo.rgb))
    return {"input": str(src), "output": str(dst), **result.log, "metadata": result.photo.metadata.summary()}


def restore_batch(jobs: Jobs, models: PipelineModels, options: RestoreOptions, compare: Path | None = None,
                  on_photo: Callable[[Path], None] | None = None,
                  on_stage: Callable[[Path, str], None] | None = None,
                  on_done: Callable[[Path, dict | None], None] | None = None) -> BatchResult:
    """Restore every job. In a folder, a finished output is skipped and a photo that fails is
    recorded and the run goes on; a single photo's failure raises. ``on_photo(src)`` is called as
    a photo starts, ``on_stage(src, stage)`` as each stage starts, ``on_done(src, log or None)``
    when it is done, skipped or failed (in the order of the photos).

    In a folder the next photo is decoded and the previous one encoded and written on two helper
    threads while the models work on the current one (at most one photo ahead and one behind:
    three photos in memory at most)."""
    on_photo = on_photo or (lambda src: None)
    on_stage = on_stage or (lambda src, stage: None)
    on_done = on_done or (lambda src, entry: None)
    result = BatchResult()
    if not jobs.folder:
        for src, dst in jobs.pairs:
            on_photo(src)
            entry = _restore_one(src, dst, models, options, compare, lambda stage, src=src: on_stage(src, stage),
                                 jobs.keep_profile)
            result.logs.append(entry)
            on_done(src, entry)
        return result
    jobs.output.mkdir(exist_ok=True)  # only now that every model loaded: a failed start leaves nothing behind
    remove_abandoned_temps(jobs.output)  # half-written outputs of a run that was killed
    todo = jobs.pairs
    unfinished = [not finished(dst) for _, dst in todo]  # decided once, at the start of the run
    with ThreadPoolExecutor(1, thread_name_prefix="restorekit-decode") as decoder, \
            ThreadPoolExecutor(1, thread_name_prefix="restorekit-encode") as encoder:
        behind: tuple[Path, Future] | None = None  # the previous photo, being written

        def settle() -> None:
            nonlocal behind
            if behind is None:
                return
            src, writing = behind
            behind, entry = None, None
            try:
                entry = writing.result()
                result.logs.append(entry)
            except RestorekitError as exc:
                result.failures.append((src.name, str(exc)))
            on_done(src, entry)

        ahead: tuple[Path, Future] | None = None  # the next photo to restore, being decoded
        for i, (src, dst) in enumerate(todo):
            on_photo(src)
            if not unfinished[i]:
                settle()
                result.skipped.append(src.name)
                on_done(src, None)
                continue
            decoding = ahead[1] if ahead is not None and ahead[0] == src else decoder.submit(read_photo, src)
            nxt = next((todo[j][0] for j in range(i + 1, len(todo)) if unfinished[j]), None)
            ahead = None if nxt is None else (nxt, decoder.submit(read_photo, nxt))
            try:
                restored = _restore_read(decoding.result(), models, options,
                                         lambda stage, src=src: on_stage(src, stage))
            except RestorekitError as exc:
                settle()
                result.failures.append((src.name, str(exc)))
                on_done(src, None)
                continue
            settle()  # one photo behind at most
            behind = (src, encoder.submit(_write_one, src, dst, *restored, None, jobs.keep_profile))
        settle()
    return result
