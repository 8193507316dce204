"""Reading and writing photos: RGB float32 in [0, 1] inside the library, whatever the file.

Handles 8- and 16-bit files, grayscale, gray+alpha, RGB, RGBA (alpha is kept aside and carried
through), EXIF orientation, HEIC (pillow-heif), and the photo's metadata: EXIF, XMP, IPTC and ICC
profile are read with the pixels (core.metadata), pixels in another colour space are converted to
sRGB, and all of it is written back into the output. OpenCV is BGR: the conversion happens here and
nowhere else. Writes are atomic (temporary file in the same directory, then rename).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from restorekit.core.errors import BadInputError
from restorekit.core.files import atomic_write_bytes
from restorekit.core.metadata import (PhotoMetadata, back_to_source_profile, convert_to_srgb, decode_heif,
                                      embed_metadata, encode_heif, heif_size, is_heif, open_heif, read_metadata)

HEIF_SUFFIXES = (".heic", ".heif")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", *HEIF_SUFFIXES)
#: Largest photo read (pixels), checked from the file header before decoding: decompression bombs.
MAX_PIXELS = 200_000_000
WRITE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", *HEIF_SUFFIXES)


@dataclass
class Photo:
    """A decoded photo: ``rgb`` HxWx3 float32 in [0, 1] (sRGB); ``alpha`` HxW float32 or None;
    ``metadata`` what the file said about the photo, written back with it."""

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    bit_depth: int = 8
    was_gray: bool = False
    path: Path | None = None
    metadata: PhotoMetadata = field(default_factory=PhotoMetadata)

    @property
    def size(self) -> tuple[int, int]:
        """(height, width)."""
        return self.rgb.shape[0], self.rgb.shape[1]


def read_image(path: str | os.PathLike, max_pixels: int | None = None, integer: bool = False) -> Photo:
    """Decode an image file into a :class:`Photo`: EXIF orientation applied, pixels converted from
    the embedded ICC profile to sRGB, metadata kept in ``photo.metadata``. A file whose header
    says it has more than ``max_pixels`` (default ``MAX_PIXELS``, or ``$RESTOREKIT_MAX_PIXELS``)
    is refused before decoding; every decoder failure is one BadInputError naming the file.
    ``integer`` keeps 8- and 16-bit samples as they are (uint8 / uint16, a quarter or half of
    float32's memory) for stages that convert tile by tile."""
    path = Path(path)
    if not path.exists():
        raise BadInputError(f"image not found: {path}")
    if not path.is_file():
        raise BadInputError(f"not a file: {path}")
    if path.stat().st_size == 0:
        raise BadInputError(f"empty image file: {path}")
    raw = path.read_bytes()
    data = np.frombuffer(raw, dtype=np.uint8)
    limit = max_pixels if max_pixels is not None else int(os.environ.get("RESTOREKIT_MAX_PIXELS", MAX_PIXELS))
    size = header_size(raw)  # checked before decoding: a 60000x60000 PNG can be a few hundred bytes
    if size is not None:
        _check_pixels(path, size, limit)
    heif = None
    if is_heif(raw[:12]):
        img, heif = _decode_heif(path, raw, limit)
    else:
        img = _decode_opencv(path, data)
        img = _apply_exif_orientation(img, raw)
    img, metadata = convert_to_srgb(img, read_metadata(raw, heif))
    photo = photo_from_array(img, path=path, integer=integer)
    photo.metadata = metadata
    return photo


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    if size[0] * size[1] > limit:
        raise BadInputError(f"image too large: {path} is {size[1]}x{size[0]} ({size[0] * size[1] / 1e6:.0f} MP), "
                            f"over the {limit / 1e6:.0f} MP limit (RESTOREKIT_MAX_PIXELS raises it)")


def _decode_opencv(path: Path, data: np.ndarray) -> np.ndarray:
    # IMREAD_UNCHANGED keeps 16-bit and alpha but ignores EXIF; ANYDEPTH|ANYCOLOR|COLOR would
    # drop alpha. Decode unchanged, then apply orientation ourselves.
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as exc:  # OpenCV's own size cap, or a decoder assertion on a malformed file
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        raise BadInputError(f"cannot decode image {path}: {lines[-1] if lines else 'OpenCV error'}") from None
    except MemoryError:
        raise BadInputError(f"not enough memory to decode {path}") from None
    if img is None:
        raise BadInputError(f"cannot decode image (corrupt or unsupported format): {path}")
    return img


def _decode_heif(path: Path, raw: bytes, limit: int):
    """The pixels of a HEIF file (size checked from its header first) and the opened file."""
    try:
        heif = open_heif(raw)
        _check_pixels(path, heif_size(heif), limit)
        return decode_heif(heif), heif
    except BadInputError:
        raise
    except MemoryError:
        raise BadInputError(f"not enough memory to decode {path}") from None
    except Exception as exc:  # noqa: BLE001 - libheif's errors (corrupt, unsupported codec) are the file's
        raise BadInputError(f"cannot decode HEIF image {path}: {str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__}") from None


def header_size(data: np.ndarray | bytes) -> tuple[int, int] | None:
    """(height, width) read from a PNG, JPEG, WebP, BMP or TIFF header without decoding, or None
    when the header is not one of those (the decoder then decides). For HEIF, the first image
    extent (``ispe``) found: the primary image's size is checked by libheif before decoding."""
    b = bytes(data[:65536]) if isinstance(data, np.ndarray) else bytes(data[:65536])
    be = lambda o, n: int.from_bytes(b[o:o + n], "big")  # noqa: E731
    le = lambda o, n: int.from_bytes(b[o:o + n], "little")  # noqa: E731
    if b[:8] == b"\x89PNG\r\n\x1a\n" and b[12:16] == b"IHDR":
        return be(20, 4), be(16, 4)
    if b[:2] == b"BM" and len(b) >= 26:
        return abs(int.from_bytes(b[22:26], "little", signed=True)), le(18, 4)
    if b[:4] == b"RIFF" and b[8:12] == b"WEBP":
        kind = b[12:16]
        if kind == b"VP8X":
            return 1 + le(27, 3), 1 + le(24, 3)
        if kind == b"VP8L" and len(b) >= 25:
            bits = le(21, 4)
            return 1 + ((bits >> 14) & 0x3FFF), 1 + (bits & 0x3FFF)
        if kind == b"VP8 " and len(b) >= 30:
            return le(28, 2) & 0x3FFF, le(26, 2) & 0x3FFF
        return None
    if b[:2] == b"\xff\xd8":
        return _jpeg_size(data if isinstance(data, bytes) else bytes(data))
    if b[:4] in (b"II*\x00", b"MM\x00*"):
        get = le if b[:2] == b"II" else be
        ifd = get(4, 4)
        dims = {}
        for k in range(get(ifd, 2) if ifd + 2 <= len(b) else 0):
            e = ifd + 2 + 12 * k
            if e + 12 > len(b):
                break
            tag, kind = get(e, 2), get(e + 2, 2)
            if tag in (256, 257):
                dims[tag] = get(e + 8, 2) if kind == 3 else get(e + 8, 4)
        return (dims[257], dims[256]) if len(dims) == 2 else None
    if is_heif(b[:12]):
        at = b.find(b"ispe")
        return (be(at + 12, 4), be(at + 8, 4)) if at > 0 and at + 16 <= len(b) else None
    return None


def _jpeg_size(b: bytes) -> tuple[int, int] | None:
    """(height, width) from a JPEG's start-of-frame, walking the markers the way libjpeg does: bytes
    that are not a marker are skipped (libjpeg only warns of "extraneous bytes"), fill bytes too,
    and the whole file is searched (APP segments before the frame can be many times 64 KB)."""
    i = 2
    while i < len(b):
        while i < len(b) and b[i] != 0xFF:  # extraneous bytes before a marker
            i += 1
        while i < len(b) and b[i] == 0xFF:  # fill bytes
            i += 1
        if i >= len(b):
            return None
        marker = b[i]
        i += 1
        if marker == 0x01 or 0xD0 <= marker <= 0xD8:  # markers without a length
            continue
        if marker in (0xD9, 0xDA) or i + 2 > len(b):  # end of image, or the scan before any frame
            return None
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # start of frame
            return (int.from_bytes(b[i + 3:i + 5], "big"), int.from_bytes(b[i + 5:i + 7], "big")) \
                if i + 7 <= len(b) else None
        i += int.from_bytes(b[i:i + 2], "big")
    return None


def photo_from_array(img: np.ndarray, path: Path | None = None, integer: bool = False) -> Photo:
    """Build a Photo from an OpenCV-style array (HxW, HxWx1, HxWx3 BGR, HxWx4 BGRA); with
    ``integer``, 8/16-bit samples stay uint8/uint16 (float files are float either way)."""
    if img.dtype == np.uint8:
        bit_depth, scale = 8, 255.0
    elif img.dtype == np.uint16:
        bit_depth, scale = 16, 65535.0
    elif img.dtype in (np.float32, np.float64):
        bit_depth, scale = 32, 1.0
    else:
        raise BadInputError(f"unsupported pixel type {img.dtype} in {path or 'image'}")
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    channels = 1 if img.ndim == 2 else img.shape[2]
    if channels not in (1, 2, 3, 4):
        raise BadInputError(f"unsupported channel count {channels} in {path or 'image'}")
    if min(img.shape[:2]) < 1:
        raise BadInputError(f"image has no pixels: {path}")
    was_gray = channels <= 2
    keep = integer and bit_depth in (8, 16)
    if keep and channels == 3 and img.flags.c_contiguous and img.flags.writeable:
        rgb = cv2.cvtColor(img, cv2.COLOR_BGR2RGB, dst=img)  # the decoder's own array, in place
    else:  # one RGB array, filled straight from the decoded pixels (no intermediate float copies)
        rgb = np.empty((*img.shape[:2], 3), img.dtype if keep else np.float32)
        rgb[...] = (img if channels == 1 else img[:, :, 0])[:, :, None] if was_gray else img[:, :, 2::-1]
    if not keep:
        rgb /= scale
    alpha = None
    if channels in (2, 4):
        alpha = img[:, :, channels - 1].astype(np.float32)
        alpha /= scale
    if scale == 1.0:  # float files may hold values outside [0, 1]
        np.clip(rgb, 0.0, 1.0, out=rgb)
        if alpha is not None:
            np.clip(alpha, 0.0, 1.0, out=alpha)
    return Photo(rgb=rgb, alpha=alpha, bit_depth=bit_depth, was_gray=was_gray, path=path)


def _exif_block(buf: bytes) -> bytes | None:
    """The EXIF TIFF block (starting at ``II*\\0`` / ``MM\\0*``) of a JPEG (APP1), PNG (``eXIf``
    chunk) or WebP (``EXIF`` chunk) byte stream, or None."""
    if buf[:2] == b"\xff\xd8":
        i = 2
        while i + 4 <= len(buf) and buf[i] == 0xFF:
            marker, length = buf[i + 1], int.from_bytes(buf[i + 2 : i + 4], "big")
            if marker == 0xE1 and buf[i + 4 : i + 10] == b"Exif\x00\x00":
                return buf[i + 10 : i + 2 + length]
            if marker in (0xDA, 0xD9):  # start of scan / end of image: no EXIF before pixels
                return None
            i += 2 + length
        return None
    if buf[:8] == b"\x89PNG\r\n\x1a\n":
        i = 8
        while i + 8 <= len(buf):
            length, kind = int.from_bytes(buf[i : i + 4], "big"), buf[i + 4 : i + 8]
            if kind == b"eXIf":
                return buf[i + 8 : i + 8 + length]
            if kind == b"IEND":
                return None
            i += 12 + length
        return None
    if buf[:4] == b"RIFF" and buf[8:12] == b"WEBP":
        i = 12
        while i + 8 <= len(buf):
            kind, length = buf[i : i + 4], int.from_bytes(buf[i + 4 : i + 8], "little")
            if kind == b"EXIF":
                block = buf[i + 8 : i + 8 + length]
                return block[6:] if block[:6] == b"Exif\x00\x00" else block
            i += 8 + length + (length & 1)
        return None
    return None


def _exif_orientation(data: bytes) -> int:
    """EXIF orientation tag (1-8) of a JPEG, PNG or WebP byte stream, 1 when absent."""
    tiff = _exif_block(data)
    if not tiff or tiff[:2] not in (b"II", b"MM"):
        return 1
    order = "little" if tiff[:2] == b"II" else "big"
    ifd = int.from_bytes(tiff[4:8], order)
    if ifd + 2 > len(tiff):
        return 1
    count = int.from_bytes(tiff[ifd : ifd + 2], order)
    for k in range(count):
        e = ifd + 2 + 12 * k
        if e + 12 > len(tiff):
            break
        if int.from_bytes(tiff[e : e + 2], order) == 0x0112:
            value = int.from_bytes(tiff[e + 8 : e + 10], order)
            return value if 1 <= value <= 8 else 1
    return 1


def _apply_exif_orientation(img: np.ndarray, data: bytes) -> np.ndarray:
    o = _exif_orientation(data)
    if o == 1:
        return img
    ops = {
        2: lambda a: cv2.flip(a, 1),
        3: lambda a: cv2.rotate(a, cv2.ROTATE_180),
        4: lambda a: cv2.flip(a, 0),
        5: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE), 1),
        6: lambda a: cv2.rotate(a, cv2.ROTATE_90_CLOCKWISE),
        7: lambda a: cv2.flip(cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE), 1),
        8: lambda a: cv2.rotate(a, cv2.ROTATE_90_COUNTERCLOCKWISE),
    }
    return ops[o](img)


def check_output_path(path: str | os.PathLike, input: str | os.PathLike | None = None,
                      overwrite: bool = False) -> Path:
    """Validate an output image path before any work is done: a format restorekit writes, a
    writable directory, not a directory itself, and not the ``input`` photo unless ``overwrite``."""
    from restorekit.core.files import check_writable_path

    path = Path(path)
    if path.suffix.lower() not in WRITE_SUFFIXES:
        raise BadInputError(
            f"unsupported output format {path.suffix or '(none)'}: use one of {', '.join(WRITE_SUFFIXES)}"
        )
    check_writable_path(path)
    if input is not None and not overwrite and path.exists() and Path(input).exists() \
            and os.path.samefile(path, input):
        raise BadInputError(f"the output {path} is the input photo: choose another output (or pass --overwrite)")
    return path


def full_scale(dtype) -> float | None:
    """The float value 1.0 of an integer sample type (uint8: 255, uint16: 65535); None for float."""
    dtype = np.dtype(dtype)
    return float(np.iinfo(dtype).max) if dtype.kind == "u" else None


def as_samples(rgb: np.ndarray, dtype) -> np.ndarray:
    """``rgb`` (float in [0, 1], or uint8 / uint16 samples) as ``dtype``: float32 in [0, 1], or
    integer samples rounded and clipped; ``rgb`` itself when it has that type already."""
    dtype = np.dtype(dtype)
    if rgb.dtype == dtype:
        return rgb
    if dtype.kind == "f":
        if rgb.dtype.kind == "u":  # converted and scaled in one pass
            return np.divide(rgb, dtype.type(full_scale(rgb.dtype)), dtype=dtype)
        return rgb.astype(dtype)
    out = np.empty(rgb.shape, dtype)
    flat_rows = rgb.reshape(rgb.shape[0], -1) if rgb.ndim > 1 else rgb.reshape(1, -1)
    target = out.reshape(flat_rows.shape)
    rows = max(1, TO_UINT_ROWS * 4096 // max(flat_rows.shape[1], 1))  # a few MB of float scratch at a time
    for top in range(0, flat_rows.shape[0], rows):
        target[top:top + rows] = _samples(flat_rows[top:top + rows], dtype, full_scale(dtype))
    return out


def sample_type(bit_depth: int) -> tuple[type, float]:
    """The integer sample type a file of ``bit_depth`` is written in, and its full scale."""
    dtype = np.uint16 if bit_depth == 16 else np.uint8
    return dtype, full_scale(dtype)


#: Rows converted at once by :func:`to_uint`: its float temporaries stay a few MB, not photo-sized.
TO_UINT_ROWS = 256


def to_uint(rgb: np.ndarray, alpha: np.ndarray | None = None, bit_depth: int = 8) -> np.ndarray:
    """RGB(+alpha) float in [0, 1] (or already uint8/uint16 samples) -> OpenCV BGR(A) uint8/uint16
    array, converted a band of rows at a time."""
    dtype, scale = sample_type(bit_depth)
    h, w = rgb.shape[:2]
    out = np.empty((h, w, 3 if alpha is None else 4), dtype)
    for top in range(0, h, TO_UINT_ROWS):
        rows = slice(top, top + TO_UINT_ROWS)
        for c, plane in enumerate([rgb[rows, :, 2], rgb[rows, :, 1], rgb[rows, :, 0]]
                                  + ([] if alpha is None else [alpha[rows]])):
            out[rows, :, c] = _samples(plane, dtype, scale)
    return out


def _samples(plane: np.ndarray, dtype, scale: float) -> np.ndarray:
    """Samples (a plane, or a band of rows) as ``dtype``: float in [0, 1] scaled, rounded to nearest
    (ties to even) and clipped; integers rescaled when their depth differs (8 <-> 16 bit)."""
    if plane.dtype == dtype:
        return plane
    if plane.dtype.kind == "u":
        plane = np.divide(plane, np.float32(full_scale(plane.dtype)), dtype=np.float32)
    if plane.ndim == 2 and plane.dtype == np.float32 and plane.strides[-1] == 4:
        # one OpenCV pass: scaled, rounded to nearest even and saturated like the numpy steps below
        return cv2.multiply(plane, scale, dtype=cv2.CV_8U if dtype == np.uint8 else cv2.CV_16U)
    v = plane * np.float32(scale)
    np.rint(v, out=v)
    return np.clip(v, 0, scale, out=v)


def write_image(
    path: str | os.PathLike,
    rgb: np.ndarray,
    alpha: np.ndarray | None = None,
    bit_depth: int = 8,
    jpeg_quality: int = 95,
    gray: bool = False,
    metadata: PhotoMetadata | None = None,
) -> Path:
    """Encode and write atomically, with ``metadata`` (EXIF, XMP, IPTC, ICC profile) where the
    format holds it; what of it could not be written is added to ``metadata.notes``. JPEG drops
    alpha and 16-bit (it cannot hold them).

    ``gray`` writes one luminance channel (used when the input photo was grayscale)."""
    path = check_output_path(path)
    suffix = path.suffix.lower()
    params: list[int] = []
    if suffix in (".jpg", ".jpeg"):
        alpha, bit_depth = None, 8
        params = [cv2.IMWRITE_JPEG_QUALITY, int(jpeg_quality)]
    dtype, scale = sample_type(bit_depth)
    swapped = False  # ``rgb`` itself turned into BGR for the encoder (and back after it)
    in_rgb = False  # ``arr`` is in RGB order (the PNG writer takes it so), not OpenCV's BGR
    if gray:  # one luminance channel; with alpha, gray is replicated into BGRA (no 2-channel PNG in OpenCV)
        luma = cv2.cvtColor(np.ascontiguousarray(rgb if rgb.dtype.kind == "u" else rgb.astype(np.float32, copy=False)),
                            cv2.COLOR_RGB2GRAY)
        arr = _samples(luma, dtype, scale) if alpha is None \
            else to_uint(np.broadcast_to(luma[:, :, None], (*luma.shape, 3)), alpha, bit_depth)
    elif alpha is None and rgb.dtype == dtype and suffix == ".png":
        arr, in_rgb = rgb, True  # the samples as they are
    elif alpha is None and rgb.dtype == dtype and rgb.flags.c_contiguous and rgb.flags.writeable:
        arr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR, dst=rgb)  # in place: no second photo-sized array
        swapped = True
    else:
        arr = to_uint(rgb, alpha, bit_depth)
    try:
        data, notes = _encode(path, suffix, arr, metadata, jpeg_quality, params, in_rgb)
    finally:
        if swapped:
            cv2.cvtColor(rgb, cv2.COLOR_BGR2RGB, dst=rgb)
    atomic_write_bytes(path, data)
    if metadata is not None:
        metadata.notes.extend(n for n in notes if n not in metadata.notes)
    return path


def _encode(path: Path, suffix: str, arr: np.ndarray, metadata: PhotoMetadata | None, jpeg_quality: int,
            params: list[int], in_rgb: bool = False) -> tuple[bytes, list[str]]:
    """The encoded file (the PNG writer on every core, libheif for HEIC, else OpenCV) with the
    metadata placed in it, and notes. ``arr`` is in OpenCV's BGR(A) order unless ``in_rgb``."""
    if suffix in HEIF_SUFFIXES:
        data = encode_heif(arr, metadata, jpeg_quality)
        return data, ["IPTC not kept (HEIF has no place for it)"] if metadata and metadata.iptc else []
    if suffix == ".png":
        from restorekit.core.png import encode_png

        bgr_order = None if in_rgb or arr.ndim == 2 else (2, 1, 0, 3)[:arr.shape[2]]
        encoded = encode_png(arr, bgr_order)
    else:
        ok, encoded = cv2.imencode(suffix, arr, params)
        if not ok:
            raise BadInputError(f"could not encode image as {suffix}: {path}")
        encoded = encoded.data if not metadata else encoded.tobytes()
    return embed_metadata(encoded, suffix, metadata, arr.shape[0], arr.shape[1], 1 if arr.ndim == 2 else 3)


def write_photo(path: str | os.PathLike, photo: Photo, jpeg_quality: int = 95, keep_profile: bool = False) -> Path:
    """Write a :class:`Photo` as it came in: its alpha, 16-bit stays 16-bit, grayscale stays
    grayscale, its metadata kept (what could not be is in ``photo.metadata.notes``). Pixels that
    were converted to sRGB are written in sRGB with the sRGB profile, or with ``keep_profile``
    back in the profile they came in."""
    rgb, metadata = photo.rgb, photo.metadata
    if keep_profile and not photo.was_gray:
        rgb, metadata = back_to_source_profile(rgb, metadata)
    path = write_image(path, rgb, photo.alpha, bit_depth=16 if photo.bit_depth == 16 else 8,
                       jpeg_quality=jpeg_quality, gray=photo.was_gray, metadata=metadata)
    if metadata is not photo.metadata:
        photo.metadata.notes[:] = metadata.notes
    return path


def list_images(folder: str | os.PathLike) -> list[Path]:
    """Image files directly inside ``folder``, sorted by name."""
    folder = Path(folder)
    if not folder.is_dir():
        raise BadInputError(f"image folder not found: {folder}")
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
