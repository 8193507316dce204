"""A photo keeps what it is: EXIF (date, camera, copyright; orientation applied and reset;
dimensions updated), XMP, IPTC and the ICC profile survive ``run`` and ``restore`` into JPEG, PNG,
TIFF and HEIC outputs, and an Adobe RGB photo is converted to sRGB for the models so that its
colours look the same after restoration (CIEDE2000 < 2 on a colour chart made here).

The Adobe RGB (1998) profile is written by this test (ICC v2 matrix/TRC: the D50-adapted colorants
and the 563/256 gamma of the published profile); the colour chart is 24 sRGB patches converted
into it by LittleCMS."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image, ImageCms
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.image import read_image, write_image, write_photo
from restorekit.core.metadata import EXIF_IFD, ORIENTATION, PIXEL_X, PIXEL_Y, read_metadata, srgb_profile

runner = CliRunner()

DATE, MAKE, MODEL, COPYRIGHT = "1962:07:14 10:21:00", "Eastman Kodak", "Brownie Starflash", "(c) 1962 A. Smith"
XMP = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       b'<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title>Picnic at the lake</dc:title>'
       b"</rdf:Description></rdf:RDF></x:xmpmeta>")
IPTC = b"\x1c\x02\x00\x00\x02\x00\x04" + b"\x1c\x02\x74\x00\x11" + b"(c) 1962 A. Smith"  # version, copyright notice


def _xyz(x: float, y: float, z: float) -> bytes:
    return b"XYZ \x00\x00\x00\x00" + b"".join(struct.pack(">i", round(v * 65536)) for v in (x, y, z))


def adobe_rgb_profile() -> bytes:
    """An ICC v2 display profile of Adobe RGB (1998): D50-adapted colorants, gamma 563/256."""
    desc_text = b"Adobe RGB (1998) compatible\x00"
    desc = b"desc\x00\x00\x00\x00" + struct.pack(">I", len(desc_text)) + desc_text + b"\x00" * 12 + b"\x00" * 67
    curve = b"curv\x00\x00\x00\x00" + struct.pack(">IH", 1, 563) + b"\x00\x00"
    tags = [(b"desc", desc), (b"cprt", b"text\x00\x00\x00\x00public domain\x00"),
            (b"wtpt", _xyz(0.9642, 1.0, 0.8249)),
            (b"rXYZ", _xyz(0.60974, 0.31111, 0.01947)), (b"gXYZ", _xyz(0.20528, 0.62567, 0.06087)),
            (b"bXYZ", _xyz(0.14919, 0.06322, 0.74457)),
            (b"rTRC", curve), (b"gTRC", curve), (b"bTRC", curve)]
    offset, table, blobs = 128 + 4 + 12 * len(tags), b"", b""
    for sig, data in tags:
        data += b"\x00" * (-len(data) % 4)
        table += sig + struct.pack(">II", offset + len(blobs), len(data))
        blobs += data
    body = struct.pack(">I", len(tags)) + table + blobs
    header = (struct.pack(">I", 128 + len(body)) + b"\x00" * 4 + bytes([2, 0x10, 0, 0]) + b"mntrRGB XYZ "
              + struct.pack(">6H", 2026, 12, 4, 0, 0, 0) + b"acsp" + b"\x00" * 24
              + struct.pack(">I", 0) + _xyz(0.9642, 1.0, 0.8249)[8:] + b"\x00" * 48)
    assert len(header) == 128
    return header + body


def colour_chart() -> np.ndarray:
    """24 saturated and neutral sRGB patches, 16x16 px each, as uint8 RGB (64x96)."""
    patches = [(115, 82, 68), (194, 150, 130), (98, 122, 157), (87, 108, 67), (133, 128, 177), (103, 189, 170),
               (214, 126, 44), (80, 91, 166), (193, 90, 99), (94, 60, 108), (157, 188, 64), (224, 163, 46),
               (56, 61, 150), (70, 148, 73), (175, 54, 60), (231, 199, 31), (187, 86, 149), (8, 133, 161),
               (243, 243, 242), (200, 200, 200), (160, 160, 160), (122, 122, 121), (85, 85, 85), (52, 52, 52)]
    chart = np.array(patches, np.uint8).reshape(4, 6, 3)
    return np.repeat(np.repeat(chart, 16, axis=0), 16, axis=1)


def _exif(orientation: int = 1, width: int | None = None, height: int | None = None) -> bytes:
    exif = Image.Exif()
    exif[0x010F], exif[0x0110], exif[0x8298], exif[ORIENTATION] = MAKE, MODEL, COPYRIGHT, orientation
    sub = exif.get_ifd(EXIF_IFD)
    sub[0x9003] = DATE
    if width:
        sub[PIXEL_X], sub[PIXEL_Y] = width, height
    return exif.tobytes()


def archive_jpeg(path, rgb: np.ndarray, icc: bytes | None = None, orientation: int = 1) -> None:
    """A JPEG as an archive holds it: EXIF (camera, date, copyright, orientation), XMP, IPTC
    (APP13) and an ICC profile."""
    from restorekit.core.metadata import photoshop_from_iptc

    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", quality=95, exif=_exif(orientation, rgb.shape[1], rgb.shape[0]),
                              icc_profile=icc or srgb_profile(), xmp=XMP)
    data = buf.getvalue()
    app13 = photoshop_from_iptc(IPTC)
    segment = b"\xff\xed" + (len(app13) + 2).to_bytes(2, "big") + app13
    path.write_bytes(data[:2] + segment + data[2:])


def assert_record_kept(path, width: int, height: int, iptc: bool = True) -> None:
    """The output file at ``path`` holds the photo's record, with its own dimensions."""
    meta = read_metadata(path.read_bytes())
    exif = Image.Exif()
    exif.load(meta.exif)
    assert (exif[0x010F], exif[0x0110], exif[0x8298]) == (MAKE, MODEL, COPYRIGHT), path
    assert exif.get(ORIENTATION, 1) == 1  # applied to the pixels: a viewer must not rotate again
    sub = exif.get_ifd(EXIF_IFD)
    assert sub[0x9003] == DATE and (sub[PIXEL_X], sub[PIXEL_Y]) == (width, height), path
    assert meta.xmp and b"Picnic at the lake" in meta.xmp, path
    assert meta.icc is not None and ImageCms.ImageCmsProfile(io.BytesIO(meta.icc)).profile.xcolor_space == "RGB "
    if iptc:
        assert meta.iptc == IPTC, path


def test_metadata_survives_every_output_format_with_orientation_applied(tmp_path):
    rgb = colour_chart()
    src = tmp_path / "scan.jpg"
    archive_jpeg(src, rgb, orientation=6)  # stored sideways: rotate 90 degrees clockwise to view
    photo = read_image(src)
    assert photo.size == (96, 64)  # rotated on read
    assert photo.metadata.iptc == IPTC and photo.metadata.converted_from is None  # sRGB: kept as is
    for name, iptc in (("o.jpg", True), ("o.png", False), ("o.tif", True), ("o16.tif", True), ("o.heic", False)):
        if name == "o16.tif":
            photo.bit_depth = 16
        write_photo(tmp_path / name, photo)
        assert_record_kept(tmp_path / name, 64, 96, iptc=iptc)
        back = read_image(tmp_path / name)
        assert back.size == (96, 64)  # orientation reset: not rotated a second time
        assert np.abs(back.rgb - photo.rgb).mean() < (0.03 if name.endswith(("jpg", "heic")) else 1e-3), name
    assert read_image(tmp_path / "o16.tif").bit_depth == 16
    assert "IPTC not kept (PNG has no place for it)" in photo.metadata.notes
    heic_only = read_image(src)
    write_photo(tmp_path / "only.heic", heic_only)
    assert heic_only.metadata.summary()["kept"] == ["exif", "xmp", "icc"]  # HEIF holds no IPTC, and says so
    assert heic_only.metadata.notes == ["IPTC not kept (HEIF has no place for it)"]


def _patches(rgb: np.ndarray) -> np.ndarray:
    """The mean colour of each chart patch's centre (8x8 of 16x16: JPEG's chroma blur stays at the edges)."""
    h, w = rgb.shape[:2]
    p = h // 4
    return rgb.reshape(4, p, 6, w // 6, 3)[:, p // 4:3 * p // 4, :, p // 4:3 * p // 4].mean(axis=(1, 3))


def _delta_e(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIEDE2000 between the patches of two charts (float RGB in [0, 1])."""
    from skimage.color import deltaE_ciede2000, rgb2lab

    return deltaE_ciede2000(rgb2lab(_patches(a)), rgb2lab(_patches(b)))


def _to_adobe(rgb: np.ndarray) -> np.ndarray:
    out = ImageCms.profileToProfile(Image.fromarray(rgb), ImageCms.ImageCmsProfile(io.BytesIO(srgb_profile())),
                                    ImageCms.ImageCmsProfile(io.BytesIO(adobe_rgb_profile())),
                                    renderingIntent=ImageCms.Intent.RELATIVE_COLORIMETRIC, outputMode="RGB")
    return np.asarray(out)


def test_an_adobe_rgb_photo_is_read_in_srgb_in_8_and_16_bit(tmp_path):
    import cv2

    chart = colour_chart()
    adobe = _to_adobe(chart)
    naive = _delta_e(adobe / 255.0, chart / 255.0)
    assert naive.max() > 4  # read as if sRGB, the Adobe RGB numbers are visibly off (ΔE00 5): the test can fail
    archive_jpeg(tmp_path / "adobe.jpg", adobe, icc=adobe_rgb_profile())
    photo = read_image(tmp_path / "adobe.jpg")
    assert photo.metadata.converted_from == "Adobe RGB (1998) compatible"
    assert _delta_e(photo.rgb, chart / 255.0).max() < 2  # JPEG's own loss included
    # 16-bit TIFF (a scanner's output): the same colours through the interpolated transform
    src16 = tmp_path / "adobe16.tif"
    cv2.imwrite(str(src16), (adobe[:, :, ::-1].astype(np.uint16) * 257))
    tagged = Image.open(src16)  # add the profile to the TIFF the way a scanner writes it
    from restorekit.core.metadata import PhotoMetadata, embed_metadata

    data, _ = embed_metadata(src16.read_bytes(), ".tif", PhotoMetadata(icc=adobe_rgb_profile()), *adobe.shape[:2], 3)
    tagged.close()
    src16.write_bytes(data)
    photo16 = read_image(src16)
    assert photo16.bit_depth == 16 and photo16.metadata.converted_from
    assert _delta_e(photo16.rgb, chart / 255.0).max() < 1
    # written in sRGB with the sRGB profile: a colour-managed viewer shows the chart's colours
    write_photo(tmp_path / "out.png", photo)
    meta = read_metadata((tmp_path / "out.png").read_bytes())
    assert meta.icc == srgb_profile()
    assert _delta_e(read_image(tmp_path / "out.png").rgb, chart / 255.0).max() < 2


def test_run_and_restore_keep_the_record_and_the_colours_of_an_adobe_rgb_photo(tmp_path, edge_bundles):
    chart = colour_chart()
    archive_jpeg(tmp_path / "srgb.jpg", chart)
    archive_jpeg(tmp_path / "adobe.jpg", _to_adobe(chart), icc=adobe_rgb_profile())
    for src in ("srgb", "adobe"):
        res = runner.invoke(app, ["run", str(edge_bundles / "onnx-fp32"), str(tmp_path / f"{src}.jpg"), "-o",
                                  str(tmp_path / f"run_{src}.tif")])
        assert res.exit_code == 0, res.output
        res = runner.invoke(app, ["restore", str(tmp_path / f"{src}.jpg"), "-o", str(tmp_path / f"restore_{src}.jpg"),
                                  "--stages", "tone"])
        assert res.exit_code == 0, res.output
    for kind in ("run", "restore"):
        w, h = read_image(tmp_path / f"{kind}_srgb.{'tif' if kind == 'run' else 'jpg'}").size[::-1]
        for src in ("srgb", "adobe"):
            assert_record_kept(tmp_path / f"{kind}_{src}.{'tif' if kind == 'run' else 'jpg'}", w, h)
        # the Adobe RGB photo looks like the sRGB one after the same restoration
        a = read_image(tmp_path / f"{kind}_srgb.{'tif' if kind == 'run' else 'jpg'}").rgb
        b = read_image(tmp_path / f"{kind}_adobe.{'tif' if kind == 'run' else 'jpg'}").rgb
        assert _delta_e(a, b).max() < 2, kind


def test_run_and_restore_keep_the_record_from_and_into_jpeg_png_tiff_and_heic(tmp_path, edge_bundles):
    """Each of the four formats as the input and as the output of `run` and of `restore` (a photo
    held sideways, orientation 6): the record survives, the orientation is applied once. PNG and
    HEIC hold no IPTC, so it is checked where it can be kept all the way."""
    src = tmp_path / "archive.jpg"
    archive_jpeg(src, colour_chart(), orientation=6)
    photo = read_image(src)
    formats = ("jpg", "png", "tif", "heic")
    for fmt in formats:
        write_photo(tmp_path / f"in.{fmt}", photo)
    for k, fmt in enumerate(formats):
        out_fmt = formats[(k + 1) % 4]  # every format once as input and once as output of each command
        for args in (["run", str(edge_bundles / "onnx-fp32")], ["restore"]):
            out = tmp_path / f"{args[0]}_{fmt}.{out_fmt}"
            res = runner.invoke(app, [*args, str(tmp_path / f"in.{fmt}"), "-o", str(out),
                                      *(["--stages", "tone"] if args[0] == "restore" else [])])
            assert res.exit_code == 0, res.output
            w, h = read_image(out).size[::-1]
            assert h > w  # upright: rotated once, on the first read
            assert_record_kept(out, w, h, iptc=fmt in ("jpg", "tif") and out_fmt in ("jpg", "tif"))


def test_unreadable_metadata_never_stops_a_photo(tmp_path):
    rgb = colour_chart()
    archive_jpeg(tmp_path / "a.jpg", rgb)
    data = bytearray((tmp_path / "a.jpg").read_bytes())
    at = data.index(b"Exif\x00\x00") + 6
    data[at:at + 8] = b"XX\x00*\xff\xff\xff\xff"  # a broken TIFF header inside the EXIF segment
    (tmp_path / "b.jpg").write_bytes(bytes(data))
    photo = read_image(tmp_path / "b.jpg")
    assert photo.size == (64, 96) and photo.metadata.exif is None
    write_image(tmp_path / "c.png", photo.rgb, metadata=photo.metadata)
    assert read_image(tmp_path / "c.png").size == (64, 96)


def test_keep_profile_writes_the_photo_back_in_its_own_profile(tmp_path, edge_bundles):
    """``--keep-profile``: the output carries the Adobe RGB profile and Adobe RGB numbers, and shows
    the same colours as the sRGB output of the same run."""
    chart = colour_chart()
    adobe = _to_adobe(chart)
    archive_jpeg(tmp_path / "adobe.jpg", adobe, icc=adobe_rgb_profile())
    for name, extra in (("srgb.png", []), ("kept.png", ["--keep-profile"])):
        res = runner.invoke(app, ["restore", str(tmp_path / "adobe.jpg"), "-o", str(tmp_path / name), "--stages", "tone",
                                  *extra])
        assert res.exit_code == 0, res.output
    assert read_metadata((tmp_path / "kept.png").read_bytes()).icc == adobe_rgb_profile()
    assert read_metadata((tmp_path / "srgb.png").read_bytes()).icc == srgb_profile()
    kept, srgb = read_image(tmp_path / "kept.png"), read_image(tmp_path / "srgb.png")  # both read back in sRGB
    assert _delta_e(kept.rgb, srgb.rgb).max() < 1
    import cv2

    raw = cv2.imread(str(tmp_path / "kept.png"), cv2.IMREAD_UNCHANGED)[:, :, ::-1] / 255.0  # the numbers in the file
    assert _delta_e(raw, adobe / 255.0).max() < _delta_e(raw, chart / 255.0).max()  # Adobe RGB numbers, not sRGB
    res = runner.invoke(app, ["run", str(edge_bundles / "onnx-fp32"), str(tmp_path / "adobe.jpg"), "-o",
                              str(tmp_path / "run.tif"), "--keep-profile"])
    assert res.exit_code == 0 and "and back" in " ".join(res.output.split())  # rich wraps long lines
    assert read_metadata((tmp_path / "run.tif").read_bytes()).icc == adobe_rgb_profile()


def test_png_metadata_after_the_pixels_is_read_without_decoding_them(tmp_path):
    """Writers may put eXIf, iTXt (XMP) after the image data: they are kept, and read from the chunk
    list alone (a PNG whose pixel data is damaged still gives its record); a chunk list that does not
    add up is handed to Pillow as it is."""
    import struct
    import zlib

    from restorekit.core.metadata import png_without_pixels

    buf = io.BytesIO()
    Image.fromarray(colour_chart()).save(buf, "PNG", exif=_exif(), icc_profile=srgb_profile())
    data = buf.getvalue()
    chunks, pos = [], 8
    while pos < len(data):
        n = struct.unpack(">I", data[pos:pos + 4])[0]
        chunks.append(data[pos:pos + 12 + n])
        pos += 12 + n
    exif = next(c for c in chunks if c[4:8] == b"eXIf")
    xmp_body = b"XML:com.adobe.xmp\x00\x00\x00\x00\x00" + XMP
    xmp = struct.pack(">I", len(xmp_body)) + b"iTXt" + xmp_body + struct.pack(">I", zlib.crc32(b"iTXt" + xmp_body))
    idat = [c for c in chunks if c[4:8] == b"IDAT"]
    rest = [c for c in chunks if c[4:8] not in (b"eXIf", b"IDAT", b"IEND")]
    moved = data[:8] + b"".join(rest + idat + [exif, xmp]) + chunks[-1]
    damaged = moved.replace(idat[0][8:40], bytes(32))  # the pixels cannot be decoded any more
    for png in (moved, damaged):
        meta = read_metadata(png)
        record = Image.Exif()
        record.load(meta.exif)
        assert record[0x010F] == MAKE and meta.xmp and b"Picnic at the lake" in meta.xmp and meta.icc
    assert b"IDAT" not in png_without_pixels(moved)
    assert png_without_pixels(moved[:-30]) == moved[:-30]  # truncated: left as it is
