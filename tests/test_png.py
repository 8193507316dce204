"""The PNG writer on every core (restorekit/core/png.py): standard files every decoder reads, equal to
their samples, about OpenCV's size."""

from __future__ import annotations

import io
import zlib

import cv2
import numpy as np
import pytest
from PIL import Image

from restorekit.core import png
from restorekit.core.png import adler32_combine, encode_png


def test_adler32_of_joined_parts_is_combined_exactly():
    rng = np.random.default_rng(0)
    for n1, n2 in [(0, 5), (1000, 777), (70000, 65521), (3, 0)]:
        a, b = rng.bytes(n1), rng.bytes(n2)
        assert adler32_combine(zlib.adler32(a), zlib.adler32(b), len(b)) == zlib.adler32(a + b)


@pytest.mark.parametrize("shape, dtype", [((37, 53, 3), np.uint8), ((64, 80), np.uint8), ((64, 80, 4), np.uint8),
                                          ((50, 70, 3), np.uint16), ((50, 70), np.uint16), ((1, 1, 3), np.uint8)])
@pytest.mark.parametrize("part_bytes", [1000, 4 << 20])  # many deflate parts, and one
def test_written_png_decodes_to_its_samples(monkeypatch, shape, dtype, part_bytes):
    monkeypatch.setattr(png, "PART_BYTES", part_bytes)
    x = np.random.default_rng(1).integers(0, np.iinfo(dtype).max + 1, shape, dtype=dtype)
    data = encode_png(x, workers=2)
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if back.ndim == 3:  # OpenCV decodes to BGR(A)
        back = back[:, :, [2, 1, 0, 3][:back.shape[2]]]
    assert back.dtype == dtype and np.array_equal(back, x)
    pil = Image.open(io.BytesIO(data))
    pil.load()  # Pillow checks every chunk's CRC and the stream's Adler-32 on the way
    if dtype == np.uint8:
        assert np.array_equal(np.asarray(pil), x)


def test_bgr_order_is_written_as_rgb_and_size_matches_opencv():
    """A real photo: OpenCV's BGR array written with ``channel_order`` equals the RGB one, and the file
    is within 2 % of OpenCV's own encoder's (same filter, level and strategy)."""
    from tests.conftest import SAMPLES

    bgr = cv2.imread(str(SAMPLES / "astronaut.png"))
    rgb = np.ascontiguousarray(bgr[:, :, ::-1])
    data = encode_png(bgr, (2, 1, 0), workers=2)
    assert data == encode_png(rgb, workers=1)
    assert np.array_equal(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED), bgr)
    ok, theirs = cv2.imencode(".png", bgr)
    assert ok and abs(len(data) / len(theirs) - 1) < 0.02


def test_bad_samples_are_refused():
    with pytest.raises(ValueError, match="uint8 or uint16"):
        encode_png(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="5 channels"):
        encode_png(np.zeros((4, 4, 5), np.uint8))
