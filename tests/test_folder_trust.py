"""Folder runs an archivist can trust: a decompression bomb, a truncated JPEG, a broken HEIC, a 0-byte
file and a folder named like a photo are each named with their reason and skipped; every good photo (HEIC too) is
restored; formats restorekit reads but does not write get a .png output; a 0-byte output from an
earlier run is redone."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from typer.testing import CliRunner

from restorekit.cli.main import app
from restorekit.core.errors import BadInputError
from restorekit.core.image import header_size, read_image, write_image

runner = CliRunner()


def _png_claiming(width: int, height: int) -> bytes:
    """A few hundred bytes of PNG whose header claims ``width`` x ``height`` (a decompression bomb)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 4096, 9))
            + chunk(b"IEND", b""))


def test_a_bomb_is_refused_from_its_header_before_decoding(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_claiming(60000, 60000))
    assert header_size(np.fromfile(str(bomb), np.uint8)) == (60000, 60000)
    with pytest.raises(BadInputError, match="too large.*60000x60000"):
        read_image(bomb)


def test_a_folder_with_bad_files_restores_every_good_photo_and_names_each_bad_one(tmp_path):
    rng = np.random.default_rng(0)
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    (src / "a_bomb.png").write_bytes(_png_claiming(60000, 60000))  # sorts first: must not end the run
    good = rng.random((24, 32, 3)).astype(np.float32)
    write_image(src / "b_truncated.jpg", good)
    data = (src / "b_truncated.jpg").read_bytes()
    (src / "b_truncated.jpg").write_bytes(data[: len(data) // 3])
    (src / "c_empty.png").write_bytes(b"")
    (src / "d_folder.png").mkdir()
    for name in ("e_good.png", "f_good.jpg", "g_good.tif"):
        write_image(src / name, good)
    import cv2

    cv2.imwrite(str(src / "h_good.webp"), (good * 255).astype(np.uint8))
    write_image(src / "i_good.heic", good)  # an iPhone photo
    (src / "c_broken.heic").write_bytes((src / "i_good.heic").read_bytes()[:300])
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "tone,cast"])
    assert res.exit_code == 2, res.output
    assert "Traceback" not in res.output + res.stderr
    for name, words in (("a_bomb.png", "too large"), ("b_truncated.jpg", "decode"), ("c_empty.png", "empty"),
                        ("d_folder.png", "not a file"), ("c_broken.heic", "decode")):
        line = next((ln for ln in res.stderr.splitlines() if name in ln), "")
        assert words in line, res.stderr
    assert sorted(p.name for p in out.iterdir()) == ["e_good.png", "f_good.jpg", "g_good.tif", "h_good.png",
                                                         "i_good.heic"]
    for p in out.iterdir():
        assert read_image(p).size == (24, 32)

    (out / "e_good.png").write_bytes(b"")  # an earlier run's 0-byte output is not "finished"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "tone,cast"])
    assert read_image(out / "e_good.png").size == (24, 32)
    assert "e_good.png" not in res.output.split("already restored")[-1]
    assert "i_good.heic" in res.output.split("already restored")[-1]  # a whole HEIC output is finished


def test_a_corrupt_photo_in_a_calibration_or_evaluation_folder_is_named_not_dropped_in_silence(tmp_path):
    from restorekit.eval.fidelity import eval_tiles
    from restorekit.quantize.calibration import calibration_tiles

    write_image(tmp_path / "good.png", np.random.default_rng(0).random((40, 40, 3)).astype(np.float32))
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    with pytest.warns(UserWarning, match="calibration photo skipped.*broken.jpg"):
        assert len(calibration_tiles(tmp_path, tile=16, count=2)) == 2
    with pytest.warns(UserWarning, match="evaluation photo skipped.*broken.jpg"):
        assert [t.name for t in eval_tiles(tmp_path, 16, count=4)] == ["good.png"]


@pytest.mark.parametrize("seed", ["bomb_after_stray_byte.jpg", "bomb_behind_big_app_segments.jpg"])
def test_a_jpeg_bomb_is_found_wherever_libjpeg_finds_its_frame(tmp_path, seed):
    """Found by scripts/fuzz.py: libjpeg skips stray bytes before a marker and reads past 64 KB of
    APP segments; the header check must find the frame where libjpeg does, or a 274-byte JPEG
    decodes to 318 MP (15 s, 1 GB) behind the pixel limit."""
    from tests.fuzz_targets import image_seeds

    path = tmp_path / seed
    path.write_bytes(image_seeds()[seed])
    assert header_size(np.fromfile(str(path), np.uint8)) == (30000, 30000)
    with pytest.raises(BadInputError, match="too large.*30000x30000"):
        read_image(path)
