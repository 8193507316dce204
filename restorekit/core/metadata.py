"""A photo's record beyond its pixels — EXIF, XMP, IPTC and its ICC profile — read with the
pixels and written back into the output; pixels in another colour space converted to sRGB for the
models (they were trained on sRGB) and written with an sRGB profile.

Pixels are encoded by OpenCV (it writes 16-bit PNG and TIFF, which Pillow cannot); the metadata is
then placed into the encoded file here: JPEG APP1/APP2/APP13 segments, PNG ``eXIf``/``iCCP``/
``iTXt`` chunks, TIFF tags (the file's directory rewritten with Pillow's TIFF writer). Pillow
reads the metadata of every format; HEIC goes through pillow-heif.
"""

from __future__ import annotations

import functools
import io
import struct
import warnings
import zlib
from dataclasses import dataclass, field, replace

import numpy as np

EXIF_HEADER = b"Exif\x00\x00"
XMP_HEADER = b"http://ns.adobe.com/xap/1.0/\x00"
ICC_HEADER = b"ICC_PROFILE\x00"
PHOTOSHOP_HEADER = b"Photoshop 3.0\x00"
IPTC_RESOURCE = 0x0404  # the Photoshop image resource that holds IPTC-IIM records
JPEG_SEGMENT_MAX = 65533  # payload bytes of one JPEG segment
ICC_CHUNK = JPEG_SEGMENT_MAX - len(ICC_HEADER) - 2

ORIENTATION, EXIF_IFD, GPS_IFD = 0x0112, 0x8769, 0x8825
PIXEL_X, PIXEL_Y = 0xA002, 0xA003  # the EXIF IFD's image width and height
TIFF_XMP, TIFF_IPTC, TIFF_ICC = 700, 33723, 34675
#: Tags of a TIFF's first directory that describe its pixels, not the photo: never carried as EXIF.
TIFF_STRUCTURE_TAGS = frozenset({
    254, 255, 256, 257, 258, 259, 262, 263, 266, 273, 277, 278, 279, 280, 281, 284, 317, 318, 319, 320,
    322, 323, 324, 325, 330, 338, 339, 340, 341, 347, 513, 514, 529, 530, 531, 532,
    TIFF_XMP, TIFF_IPTC, TIFF_ICC,
})
#: LUT nodes per axis for converting 16-bit and float pixels between profiles (255 = 51 * 5: the
#: nodes are exact 8-bit values).
LUT_NODES = 52


@dataclass
class PhotoMetadata:
    """What a photo file says about itself. ``exif`` is the TIFF-structured EXIF block (orientation
    already applied to the pixels and reset to 1), ``iptc`` the IPTC-IIM records, ``icc`` the
    profile of the pixels as held (sRGB's own when they were converted), ``converted_from`` the
    description of the source profile the pixels were converted from and ``source_icc`` that
    profile (for ``--keep-profile``), ``notes`` what could not be kept."""

    exif: bytes | None = None
    xmp: bytes | None = None
    iptc: bytes | None = None
    icc: bytes | None = None
    converted_from: str | None = None
    source_icc: bytes | None = None
    notes: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return any((self.exif, self.xmp, self.iptc, self.icc))

    def summary(self) -> dict:
        """What a log says of it: the parts carried, the colour conversion, what was not kept."""
        dropped = {n.split()[0].lower() for n in self.notes if " not kept" in n}
        return {"kept": [k for k in ("exif", "xmp", "iptc", "icc") if getattr(self, k) and k not in dropped],
                "converted_from": self.converted_from, "notes": list(self.notes)}


# ---------------------------------------------------------------------------------------- reading

def _photo_tags(exif) -> dict:
    """The tags of a Pillow ``Exif`` that describe the photo, not its pixel layout: the first
    directory's (structure tags left out) and the EXIF and GPS directories, each as a dict."""
    tags = {tag: value for tag, value in exif.items()
            if tag not in TIFF_STRUCTURE_TAGS and tag not in (EXIF_IFD, GPS_IFD)}
    for ifd_tag in (EXIF_IFD, GPS_IFD):
        sub = exif.get_ifd(ifd_tag)
        if sub:
            tags[ifd_tag] = dict(sub)
    return tags


def _clean_exif(exif) -> bytes | None:
    """A Pillow ``Exif`` as a TIFF block with orientation 1 and no pixel-structure tags, or None."""
    from PIL import Image

    tags = _photo_tags(exif)
    if not tags:
        return None
    out = Image.Exif()
    for tag, value in tags.items():
        if tag in (EXIF_IFD, GPS_IFD):
            out.get_ifd(tag).update(value)
        else:
            out[tag] = value
    if ORIENTATION in out:
        out[ORIENTATION] = 1
    return out.tobytes()[len(EXIF_HEADER):]


def iptc_from_photoshop(payload: bytes) -> bytes | None:
    """The IPTC-IIM records inside a JPEG APP13 ``Photoshop 3.0`` segment's payload, or None."""
    if not payload.startswith(PHOTOSHOP_HEADER):
        return None
    i = len(PHOTOSHOP_HEADER)
    while i + 12 <= len(payload) and payload[i:i + 4] == b"8BIM":
        rid = int.from_bytes(payload[i + 4:i + 6], "big")
        name_len = payload[i + 6]
        j = i + 6 + ((name_len + 2) & ~1)  # Pascal name, padded to an even length
        if j + 4 > len(payload):
            return None
        size = int.from_bytes(payload[j:j + 4], "big")
        data = payload[j + 4:j + 4 + size]
        if rid == IPTC_RESOURCE:
            return data or None
        i = j + 4 + size + (size & 1)
    return None


def photoshop_from_iptc(iptc: bytes) -> bytes:
    """A JPEG APP13 payload holding ``iptc`` (IPTC-IIM records) as its one image resource."""
    pad = b"\x00" if len(iptc) & 1 else b""
    return PHOTOSHOP_HEADER + b"8BIM" + struct.pack(">HHI", IPTC_RESOURCE, 0, len(iptc)) + iptc + pad


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_without_pixels(data: bytes) -> bytes:
    """``data`` (a PNG file) without its IDAT chunks: every metadata chunk, before or after the image
    data, is then read by Pillow's open without decoding a pixel. ``data`` itself when it is not a
    PNG or its chunk list does not add up (Pillow then reads it as it is)."""
    if not data.startswith(PNG_SIGNATURE):
        return data
    kept, pos = [PNG_SIGNATURE], len(PNG_SIGNATURE)
    while pos + 12 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        end = pos + 12 + length
        if end > len(data):
            return data
        if kind != b"IDAT":
            kept.append(data[pos:end])
        if kind == b"IEND":
            return b"".join(kept)
        pos = end
    return data


def read_metadata(data: bytes, heif=None) -> PhotoMetadata:
    """The metadata of an encoded JPEG, PNG, TIFF, WebP or HEIC file (``heif``: the HEIF file
    already opened by :func:`open_heif`). Unreadable metadata never stops a photo: it is left out
    and said in ``notes``."""
    meta = PhotoMetadata()
    try:
        if heif is not None or is_heif(data):
            info = (heif or open_heif(data)).info
            exif, meta.icc, meta.xmp = info.get("exif"), info.get("icc_profile") or None, info.get("xmp") or None
            if exif:
                from PIL import Image

                obj = Image.Exif()
                obj.load(exif[len(EXIF_HEADER):] if exif.startswith(EXIF_HEADER) else exif)
                meta.exif = _clean_exif(obj)
            return meta
        from PIL import Image

        # the pixel limit is restorekit's, checked before decoding: Pillow's own (178 MP) would drop
        # the metadata of a photo between it and RESTOREKIT_MAX_PIXELS
        limit, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                im = Image.open(io.BytesIO(png_without_pixels(data)))  # PNG: no pixel is decoded twice
            finally:
                Image.MAX_IMAGE_PIXELS = limit
            with im:
                info = im.info
                meta.icc = info.get("icc_profile") or None
                xmp = info.get("xmp") or info.get("XML:com.adobe.xmp")
                meta.xmp = (xmp.encode() if isinstance(xmp, str) else bytes(xmp)) if xmp else None
                # a PNG without eXIf has none (Pillow would decode the pixels looking for one)
                meta.exif = _clean_exif(im.getexif() if im.format != "PNG" or "exif" in info else Image.Exif())
                if im.format == "JPEG":
                    meta.iptc = next((iptc_from_photoshop(p) for m, p in getattr(im, "applist", [])
                                      if m == "APP13" and iptc_from_photoshop(p)), None)
                elif im.format == "TIFF":
                    raw = im.tag_v2.get(TIFF_IPTC)
                    if isinstance(raw, tuple):  # some writers type it LONG: the bytes, word by word
                        raw = b"".join(int(v).to_bytes(4, "big" if data[:2] == b"MM" else "little") for v in raw)
                    meta.iptc = bytes(raw) if raw else None
    except Exception as exc:  # noqa: BLE001 - metadata is kept where it can be read, never a reason to fail
        meta = PhotoMetadata(notes=[f"metadata not kept (unreadable: {type(exc).__name__})"])
    return meta


# ------------------------------------------------------------------------------------ colour spaces

def _profile(icc: bytes):
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(io.BytesIO(icc))


@functools.lru_cache(maxsize=1)
def srgb_profile() -> bytes:
    """The sRGB ICC profile written into outputs whose pixels were converted to sRGB."""
    from PIL import ImageCms

    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()


def profile_space(icc: bytes | None) -> str | None:
    """The colour space of an ICC profile ("RGB", "GRAY", "CMYK", ...), None when unreadable."""
    if not icc:
        return None
    try:
        return _profile(icc).profile.xcolor_space.strip()
    except Exception:  # noqa: BLE001 - an unreadable profile is treated as absent
        return None


def profile_name(icc: bytes) -> str:
    """The profile's description, for logs."""
    try:
        return _profile(icc).profile.profile_description or "unnamed profile"
    except Exception:  # noqa: BLE001
        return "unreadable profile"


def _transform_uint8(rgb: np.ndarray, src: bytes, dst: bytes) -> np.ndarray:
    """HxWx3 uint8 RGB from profile ``src`` to ``dst`` (relative colorimetric, LittleCMS)."""
    from PIL import Image, ImageCms

    image = Image.fromarray(np.ascontiguousarray(rgb), "RGB")
    out = ImageCms.profileToProfile(image, _profile(src), _profile(dst),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(out, dtype=np.uint8).reshape(rgb.shape)


def _lut(src: bytes, dst: bytes) -> np.ndarray:
    """The transform sampled on a LUT_NODES^3 grid of exact 8-bit values, as float32 in [0, 1]."""
    nodes = (np.arange(LUT_NODES) * (255 // (LUT_NODES - 1))).astype(np.uint8)
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    return _transform_uint8(grid, src, dst).reshape(LUT_NODES, LUT_NODES, LUT_NODES, 3).astype(np.float32) / 255.0


def _apply_lut(rgb: np.ndarray, lut: np.ndarray, rows: int = 256) -> np.ndarray:
    """Trilinear interpolation of ``lut`` at HxWx3 ``rgb`` (float in [0, 1], or uint8/uint16 samples),
    a band of rows at a time; float32 out."""
    n = lut.shape[0] - 1
    out = np.empty(rgb.shape, np.float32)
    full = float(np.iinfo(rgb.dtype).max) if rgb.dtype.kind == "u" else 1.0
    for r0 in range(0, rgb.shape[0], rows):
        x = np.clip(rgb[r0:r0 + rows] / np.float32(full), 0.0, 1.0).astype(np.float32) * n
        i = np.minimum(x.astype(np.int64), n - 1)
        f = x - i
        acc = np.zeros(x.shape, np.float32)
        for dr in (0, 1):
            wr = f[..., 0] if dr else 1 - f[..., 0]
            for dg in (0, 1):
                wg = f[..., 1] if dg else 1 - f[..., 1]
                for db in (0, 1):
                    wb = f[..., 2] if db else 1 - f[..., 2]
                    acc += (wr * wg * wb)[..., None] * lut[i[..., 0] + dr, i[..., 1] + dg, i[..., 2] + db]
        out[r0:r0 + rows] = acc
    return out


def is_srgb_like(icc: bytes) -> bool:
    """True when the profile maps colours to sRGB within one 8-bit level (an sRGB profile by any
    name): such pixels need no conversion and keep their profile."""
    nodes = (np.arange(18) * 15).astype(np.uint8)
    grid = np.stack(np.meshgrid(nodes, nodes, nodes, indexing="ij"), axis=-1).reshape(-1, 1, 3)
    return int(np.abs(_transform_uint8(grid, icc, srgb_profile()).astype(int) - grid).max()) <= 1


def convert_to_srgb(bgr: np.ndarray, meta: PhotoMetadata) -> tuple[np.ndarray, PhotoMetadata]:
    """OpenCV-order colour pixels (BGR or BGRA; uint8, uint16 or float) from the photo's RGB ICC
    profile to sRGB. Returns the pixels (same dtype) and the metadata with the sRGB profile; pixels
    that are already sRGB, gray, or without a readable RGB profile come back unchanged."""
    if bgr.ndim != 3 or bgr.shape[2] not in (3, 4) or profile_space(meta.icc) != "RGB":
        return bgr, meta
    try:
        if is_srgb_like(meta.icc):
            return bgr, meta
        srgb = srgb_profile()
        rgb = bgr[:, :, 2::-1]
        if bgr.dtype == np.uint8:
            out = _transform_uint8(rgb, meta.icc, srgb)
        else:
            scale = 65535.0 if bgr.dtype == np.uint16 else 1.0
            out = _apply_lut(rgb.astype(np.float32) / scale, _lut(meta.icc, srgb))
            out = np.clip(np.rint(out * scale), 0, scale).astype(bgr.dtype) if scale > 1 else out.astype(bgr.dtype)
    except Exception as exc:  # noqa: BLE001 - a profile LittleCMS cannot use: pixels as they are, said
        return bgr, replace(meta, notes=meta.notes + [f"ICC profile not applied ({type(exc).__name__})"])
    converted = out[:, :, ::-1]
    if bgr.shape[2] == 4:
        converted = np.concatenate([converted, bgr[:, :, 3:]], axis=2)
    return np.ascontiguousarray(converted), replace(meta, icc=srgb, converted_from=profile_name(meta.icc),
                                                    source_icc=meta.icc)


def back_to_source_profile(rgb: np.ndarray, meta: PhotoMetadata) -> tuple[np.ndarray, PhotoMetadata]:
    """RGB (float in [0, 1] or integer samples; sRGB) converted back into the profile the photo came in, with that
    profile as the one to write (``--keep-profile``); unchanged when the photo was not converted."""
    if not meta.source_icc or rgb.ndim != 3:
        return rgb, meta
    out = _apply_lut(rgb, _lut(srgb_profile(), meta.source_icc))
    return out, replace(meta, icc=meta.source_icc, notes=list(meta.notes))


# ---------------------------------------------------------------------------------------- writing

def _exif_for(meta: PhotoMetadata, height: int, width: int):
    """The photo's EXIF as a Pillow ``Exif`` with the output's dimensions, or None."""
    from PIL import Image

    if not meta.exif:
        return None
    exif = Image.Exif()
    exif.load(meta.exif)
    sub = exif.get_ifd(EXIF_IFD)
    if PIXEL_X in sub or PIXEL_Y in sub:
        sub[PIXEL_X], sub[PIXEL_Y] = width, height
    return exif


def _segment(marker: int, payload: bytes) -> bytes:
    return bytes([0xFF, marker]) + (len(payload) + 2).to_bytes(2, "big") + payload


def _embed_jpeg(data: bytes, meta: PhotoMetadata, exif_bytes: bytes | None, icc: bytes | None) -> tuple[bytes, list[str]]:
    notes, segments = [], []
    if exif_bytes:
        if len(EXIF_HEADER) + len(exif_bytes) <= JPEG_SEGMENT_MAX:
            segments.append(_segment(0xE1, EXIF_HEADER + exif_bytes))
        else:
            notes.append("EXIF not kept (larger than one JPEG segment)")
    if meta.xmp:
        if len(XMP_HEADER) + len(meta.xmp) <= JPEG_SEGMENT_MAX:
            segments.append(_segment(0xE1, XMP_HEADER + meta.xmp))
        else:
            notes.append("XMP not kept (extended XMP is not written)")
    if icc:
        chunks = [icc[i:i + ICC_CHUNK] for i in range(0, len(icc), ICC_CHUNK)]
        if len(chunks) <= 255:
            segments += [_segment(0xE2, ICC_HEADER + bytes([k + 1, len(chunks)]) + c) for k, c in enumerate(chunks)]
    if meta.iptc:
        segments.append(_segment(0xED, photoshop_from_iptc(meta.iptc)))
    # after SOI and the JFIF APP0 segment that must come first
    at = 2
    if data[2:4] == b"\xff\xe0":
        at = 4 + int.from_bytes(data[4:6], "big")
    return data[:at] + b"".join(segments) + data[at:], notes


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")


def _embed_png(data: bytes, meta: PhotoMetadata, exif_bytes: bytes | None, icc: bytes | None) -> bytes:
    chunks = []
    if icc:
        chunks.append(_chunk(b"iCCP", b"ICC profile\x00\x00" + zlib.compress(icc)))
    if exif_bytes:
        chunks.append(_chunk(b"eXIf", exif_bytes))
    if meta.xmp:
        chunks.append(_chunk(b"iTXt", b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + meta.xmp))
    at = 8 + 12 + int.from_bytes(data[8:12], "big")  # after the signature and IHDR
    return data[:at] + b"".join(chunks) + data[at:]


def _embed_tiff(data: bytes, meta: PhotoMetadata, exif, icc: bytes | None) -> bytes:
    """Rewrite a one-directory TIFF with the photo's tags added: Pillow's TIFF writer lays out the
    directory, the strips follow it unchanged."""
    from PIL import Image, TiffImagePlugin

    with Image.open(io.BytesIO(data)) as im:
        tags = im.tag_v2
        strips = [data[o:o + c] for o, c in zip(tags[273], tags[279])]
        ifd = TiffImagePlugin.ImageFileDirectory_v2(prefix=data[:2])
        for tag, value in tags.items():
            ifd[tag] = value
            ifd.tagtype[tag] = tags.tagtype[tag]
    ifd[273] = tuple(int(v) for v in np.cumsum([0] + [len(s) for s in strips[:-1]]))  # relative to the strips' start
    if exif is not None:
        for tag, value in _photo_tags(exif).items():  # the EXIF and GPS directories as nested ones
            ifd[tag] = value
    if icc:
        ifd[TIFF_ICC] = icc
        ifd.tagtype[TIFF_ICC] = 7  # UNDEFINED
    if meta.xmp:
        ifd[TIFF_XMP] = meta.xmp
        ifd.tagtype[TIFF_XMP] = 1  # BYTE
    if meta.iptc:
        ifd[TIFF_IPTC] = meta.iptc
        ifd.tagtype[TIFF_IPTC] = 7
    return ifd._get_ifh() + ifd.tobytes(8) + b"".join(strips)


def embed_metadata(data: bytes, suffix: str, meta: PhotoMetadata | None, height: int, width: int,
                   channels: int) -> tuple[bytes, list[str]]:
    """``data`` (an encoded .jpg/.png/.tif image of ``height`` x ``width`` with ``channels``
    colour channels) with the photo's metadata placed in it. The ICC profile goes only where it
    describes the written pixels (an RGB profile on colour pixels, a gray one on gray). Returns the
    bytes and what could not be kept."""
    if not meta:
        return data, []
    space = profile_space(meta.icc)
    icc = meta.icc if space == ("RGB" if channels >= 3 else "GRAY") else None
    exif = _exif_for(meta, height, width)
    exif_bytes = exif.tobytes()[len(EXIF_HEADER):] if exif is not None else None
    suffix = suffix.lower()
    if suffix in (".jpg", ".jpeg"):
        return _embed_jpeg(data, meta, exif_bytes, icc)
    if suffix == ".png":
        return _embed_png(data, meta, exif_bytes, icc), (["IPTC not kept (PNG has no place for it)"] if meta.iptc else [])
    if suffix in (".tif", ".tiff"):
        return _embed_tiff(data, meta, exif, icc), []
    return data, [f"metadata not written to {suffix}"]


# ------------------------------------------------------------------------------------------- HEIF

HEIF_BRANDS = (b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"mif1", b"msf1")


def is_heif(data: bytes) -> bool:
    """An ISO-BMFF HEIF/HEIC file (``ftyp`` box with a HEIF brand)."""
    return len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in HEIF_BRANDS


def _heif_module():
    from restorekit.core.errors import BadInputError

    try:
        import pillow_heif
    except ImportError:
        raise BadInputError("HEIC/HEIF photos need pillow-heif: pip install 'restorekit[runtime]'") from None
    return pillow_heif


def open_heif(data: bytes):
    """A HEIF file opened from its header (pillow-heif's ``HeifFile``; pixels decoded on demand)."""
    return _heif_module().open_heif(io.BytesIO(data), convert_hdr_to_8bit=False)


def heif_size(heif) -> tuple[int, int]:
    """(height, width) of an opened HEIF file's primary image, from its header."""
    w, h = heif.size
    return h, w


def decode_heif(heif) -> np.ndarray:
    """An opened HEIF file's primary image as an OpenCV-order array (BGR/BGRA, uint8 or uint16);
    its rotation and mirroring (``irot``/``imir``) applied by libheif."""
    arr = np.asarray(heif)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):
        arr = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    return np.ascontiguousarray(arr)


def encode_heif(bgr: np.ndarray, meta: PhotoMetadata | None, quality: int) -> bytes:
    """An OpenCV-order uint8/uint16 array (gray, BGR or BGRA) as HEIC bytes with the photo's
    EXIF, XMP and ICC profile (HEIF holds no IPTC)."""
    ph = _heif_module()
    arr = bgr if bgr.ndim == 3 else np.repeat(bgr[:, :, None], 3, axis=2)
    rgb = np.concatenate([arr[:, :, 2::-1], arr[:, :, 3:]], axis=2)
    mode = ("RGBA" if rgb.shape[2] == 4 else "RGB") + (";16" if rgb.dtype == np.uint16 else "")
    heif = ph.from_bytes(mode=mode, size=(rgb.shape[1], rgb.shape[0]), data=np.ascontiguousarray(rgb).tobytes())
    kwargs = {}
    if meta:
        exif = _exif_for(meta, rgb.shape[0], rgb.shape[1])
        if exif is not None:
            kwargs["exif"] = exif.tobytes()
        if meta.xmp:
            kwargs["xmp"] = meta.xmp
        if profile_space(meta.icc) == "RGB":
            kwargs["icc_profile"] = meta.icc
    buf = io.BytesIO()
    heif.save(buf, quality=int(quality), **kwargs)
    return buf.getvalue()
