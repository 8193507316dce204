"""Photo decoding: bit depths, channels, alpha, EXIF orientation, bad files, atomic writes."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restorekit.core.errors import BadInputError
from restorekit.core.image import read_image, write_image, write_photo


def _write(path, arr, params=()):
    assert cv2.imwrite(str(path), arr, list(params))
    return path


def test_rgb_is_converted_from_bgr(tmp_path):
    arr = np.zeros((4, 5, 3), np.uint8)
    arr[..., 2] = 255  # red in BGR
    p = read_image(_write(tmp_path / "red.png", arr))
    assert p.rgb.shape == (4, 5, 3) and p.alpha is None
    assert np.allclose(p.rgb[..., 0], 1.0) and np.allclose(p.rgb[..., 1:], 0.0)


def test_16bit_keeps_precision(tmp_path):
    arr = np.full((3, 3, 3), 1000, np.uint16)
    p = read_image(_write(tmp_path / "deep.png", arr))
    assert p.bit_depth == 16
    assert np.allclose(p.rgb, 1000 / 65535, atol=1e-7)


def test_gray_and_gray_alpha(tmp_path):
    g = read_image(_write(tmp_path / "g.png", np.full((6, 7), 128, np.uint8)))
    assert g.was_gray and g.rgb.shape == (6, 7, 3) and np.allclose(g.rgb, 128 / 255)
    ga = np.dstack([np.full((6, 7), 10, np.uint8), np.full((6, 7), 200, np.uint8)])
    # OpenCV cannot write 2-channel PNGs: decode path is exercised through photo_from_array
    from restorekit.core.image import photo_from_array

    p = photo_from_array(ga)
    assert p.was_gray and np.allclose(p.alpha, 200 / 255)


def test_rgba_alpha_carried(tmp_path):
    arr = np.zeros((8, 8, 4), np.uint8)
    arr[..., 3] = np.arange(8, dtype=np.uint8)[None, :] * 30
    p = read_image(_write(tmp_path / "a.png", arr))
    assert p.alpha is not None and np.allclose(p.alpha[0], np.arange(8) * 30 / 255)
    out = write_image(tmp_path / "b.png", p.rgb, p.alpha)
    back = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert back.shape == (8, 8, 4) and np.array_equal(back[..., 3], arr[..., 3])


def test_exif_orientation_applied(tmp_path):
    # A 2x4 JPEG with EXIF orientation 6 (rotate 90 CW) must come back 4 tall, 2 wide.
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    ok, jpg = cv2.imencode(".jpg", arr)
    tiff = b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00" + b"\x00\x00\x00\x00"
    app1 = b"Exif\x00\x00" + tiff
    seg = b"\xff\xe1" + (len(app1) + 2).to_bytes(2, "big") + app1
    data = jpg.tobytes()
    (tmp_path / "rot.jpg").write_bytes(data[:2] + seg + data[2:])
    p = read_image(tmp_path / "rot.jpg")
    assert p.size == (40, 20)
    # rotated clockwise: the white left half is now the top half
    assert p.rgb[:15].mean() > 0.9 and p.rgb[25:].mean() < 0.1


_TIFF_ORIENTATION_6 = (b"MM\x00\x2a\x00\x00\x00\x08" + b"\x00\x01" + b"\x01\x12\x00\x03\x00\x00\x00\x01\x00\x06\x00\x00"
                       + b"\x00\x00\x00\x00")


def _png_with_exif(arr: np.ndarray) -> bytes:
    import struct
    import zlib

    ok, png = cv2.imencode(".png", arr)
    data = png.tobytes()
    chunk = (struct.pack(">I", len(_TIFF_ORIENTATION_6)) + b"eXIf" + _TIFF_ORIENTATION_6
             + struct.pack(">I", zlib.crc32(b"eXIf" + _TIFF_ORIENTATION_6)))
    return data[:33] + chunk + data[33:]  # after the signature (8) and IHDR (25)


def _webp_with_exif(arr: np.ndarray) -> bytes:
    ok, webp = cv2.imencode(".webp", arr, [cv2.IMWRITE_WEBP_QUALITY, 101])
    data = webp.tobytes()
    body = data[12:]
    width, height = arr.shape[1], arr.shape[0]
    vp8x = b"VP8X" + (10).to_bytes(4, "little") + bytes([0x08, 0, 0, 0]) + (width - 1).to_bytes(3, "little") \
        + (height - 1).to_bytes(3, "little")
    exif = b"EXIF" + len(_TIFF_ORIENTATION_6).to_bytes(4, "little") + _TIFF_ORIENTATION_6
    riff = b"WEBP" + vp8x + body + exif
    return b"RIFF" + len(riff).to_bytes(4, "little") + riff


@pytest.mark.parametrize("kind", ["png", "webp"])
def test_exif_orientation_of_png_and_webp_is_applied_too(tmp_path, kind):
    arr = np.zeros((20, 40, 3), np.uint8)
    arr[:, :20] = 255  # left half white
    f = tmp_path / f"rot.{kind}"
    f.write_bytes(_png_with_exif(arr) if kind == "png" else _webp_with_exif(arr))
    p = read_image(f)
    assert p.size == (40, 20)
    assert p.rgb[:15].mean() > 0.9 and p.rgb[25:].mean() < 0.1


@pytest.mark.parametrize("content", [b"", b"this is not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 30])
def test_bad_files_are_one_line_errors(tmp_path, content):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(BadInputError) as e:
        read_image(f)
    assert "\n" not in str(e.value) and "bad.png" in str(e.value)


def test_missing_file(tmp_path):
    with pytest.raises(BadInputError, match="not found"):
        read_image(tmp_path / "nope.png")


def test_write_rejects_missing_dir_and_leaves_nothing(tmp_path):
    with pytest.raises(BadInputError, match="does not exist"):
        write_image(tmp_path / "missing" / "o.png", np.zeros((2, 2, 3), np.float32))
    with pytest.raises(BadInputError, match="unsupported output format"):
        write_image(tmp_path / "o.gif", np.zeros((2, 2, 3), np.float32))
    assert list(tmp_path.iterdir()) == []


def test_16bit_round_trip(tmp_path):
    rgb = np.random.default_rng(0).random((5, 6, 3)).astype(np.float32)
    write_image(tmp_path / "x.png", rgb, bit_depth=16)
    p = read_image(tmp_path / "x.png")
    assert p.bit_depth == 16 and np.abs(p.rgb - rgb).max() < 1 / 65535


def test_gray_written_back_as_gray(tmp_path):
    rgb = np.dstack([np.full((4, 4), 0.5, np.float32)] * 3)
    write_image(tmp_path / "g.png", rgb, gray=True)
    back = cv2.imread(str(tmp_path / "g.png"), cv2.IMREAD_UNCHANGED)
    assert back.shape == (4, 4) and int(back[0, 0]) == 128
    write_image(tmp_path / "ga.png", rgb, alpha=np.ones((4, 4), np.float32), gray=True)
    assert cv2.imread(str(tmp_path / "ga.png"), cv2.IMREAD_UNCHANGED).shape == (4, 4, 4)


def test_outputs_get_the_usual_file_mode(tmp_path):
    """Atomic writes go through a private temp file; the result must not stay owner-only."""
    import os
    import stat

    old = os.umask(0o022)
    try:
        write_image(tmp_path / "o.png", np.zeros((4, 4, 3), np.float32))
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "o.png").stat().st_mode) == 0o644


def test_write_photo_keeps_16_bits_alpha_and_gray(tmp_path):
    rng = np.random.default_rng(3)
    rgba = (rng.random((20, 24, 4)) * 65535).astype(np.uint16)
    cv2.imwrite(str(tmp_path / "in.png"), rgba)
    photo = read_image(tmp_path / "in.png")
    back = read_image(write_photo(tmp_path / "out.png", photo))
    assert back.bit_depth == 16 and back.alpha is not None
    assert np.abs(back.rgb - photo.rgb).max() < 1 / 65535 and np.abs(back.alpha - photo.alpha).max() < 1 / 65535
    gray = (rng.random((20, 24)) * 255).astype(np.uint8)
    cv2.imwrite(str(tmp_path / "gray.png"), gray)
    out = write_photo(tmp_path / "gray_out.png", read_image(tmp_path / "gray.png"))
    assert cv2.imread(str(out), cv2.IMREAD_UNCHANGED).ndim == 2


@pytest.mark.parametrize("kind", ["rgb8", "rgb16", "gray8", "rgba8", "jpeg"])
def test_integer_photos_write_the_same_files_as_float_ones(tmp_path, kind):
    """``read_image(integer=True)`` keeps uint8/uint16 samples (what `run` streams into) and
    ``write_photo`` writes them exactly as the float photo of the same file, leaving the photo's
    own samples unchanged (the in-place BGR swap for the encoder is undone)."""
    rng = np.random.default_rng(3)
    dtype = np.uint16 if kind == "rgb16" else np.uint8
    shape = {"gray8": (21, 17), "rgba8": (21, 17, 4)}.get(kind, (21, 17, 3))
    arr = rng.integers(0, np.iinfo(dtype).max, shape, endpoint=True).astype(dtype)
    src = _write(tmp_path / ("in.jpg" if kind == "jpeg" else "in.png"), arr)
    as_int, as_float = read_image(src, integer=True), read_image(src)
    assert as_int.rgb.dtype == dtype and as_float.rgb.dtype == np.float32
    assert np.abs(as_int.rgb / np.iinfo(dtype).max - as_float.rgb).max() < 1e-6
    before = as_int.rgb.copy()
    suffix = ".jpg" if kind == "jpeg" else ".png"
    write_photo(tmp_path / f"i{suffix}", as_int)
    write_photo(tmp_path / f"f{suffix}", as_float)
    assert np.array_equal(as_int.rgb, before)
    a = cv2.imread(str(tmp_path / f"i{suffix}"), cv2.IMREAD_UNCHANGED)
    b = cv2.imread(str(tmp_path / f"f{suffix}"), cv2.IMREAD_UNCHANGED)
    assert a.dtype == b.dtype == dtype and a.shape == b.shape == arr.shape and np.array_equal(a, b)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_samples_are_rounded_to_nearest_even_and_saturated(dtype):
    """as_samples (OpenCV's one-pass conversion on contiguous rows) equals numpy's rint-and-clip, ties
    and values outside [0, 1] included, and integer samples convert to float and back exactly."""
    from restorekit.core.image import as_samples

    full = np.iinfo(dtype).max
    f = np.random.default_rng(3).random((70, 90, 3), dtype=np.float32) * 1.4 - 0.2
    f[0, :4, 0] = (np.array([0.5, 1.5, 2.5, full - 0.5]) / full).astype(np.float32)
    expect = np.clip(np.rint(f * np.float32(full)), 0, full).astype(dtype)
    assert np.array_equal(as_samples(f, dtype), expect)
    assert np.array_equal(as_samples(f[:, ::2], dtype), expect[:, ::2])  # strided rows: the numpy path
    ints = expect
    assert np.array_equal(as_samples(as_samples(ints, np.float32), dtype), ints)
