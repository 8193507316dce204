"""The scratch detector: its trainer (same loop as the built-in model's), the shipped weights'
quality on held-out synthetic damage, multi-channel tiling, and inpainting."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

torch = pytest.importorskip("torch")

from restorekit.cli.main import app  # noqa: E402
from restorekit.degrade.damage import damage_photo  # noqa: E402
from restorekit.degrade.synthetic import age_photo, degrade_pair  # noqa: E402
from restorekit.training.train import SCAN_AFTER_DAMAGE, make_scratch_batch, train_scratch_detector  # noqa: E402
from restorekit.core.errors import BadInputError  # noqa: E402
from restorekit.models.builtin import load_student_safetensors, read_safetensors_metadata  # noqa: E402
from restorekit.models.reference import TorchSession  # noqa: E402
from restorekit.restore.defects import detect_defects, inpaint  # noqa: E402
from restorekit.core.image import read_image, write_image  # noqa: E402
from tests.conftest import ROOT, SAMPLES  # noqa: E402

WEIGHTS = ROOT / "restorekit" / "models" / "weights" / "scratch_unet.safetensors"


@pytest.fixture
def data_dir(tmp_path, rgb_photo):
    folder = tmp_path / "data"
    folder.mkdir()
    write_image(folder / "a.png", rgb_photo[:96, :96])
    write_image(folder / "b.png", rgb_photo[200:296, 150:246])
    return folder


def test_batches_are_a_pure_function_of_seed_and_step(rgb_photo):
    images = [rgb_photo[:128, :128]]
    x1, y1 = make_scratch_batch(images, 0, 7, 2, 64)
    x2, y2 = make_scratch_batch(images, 0, 7, 2, 64)
    x3, _ = make_scratch_batch(images, 0, 8, 2, 64)
    assert np.array_equal(x1, x2) and np.array_equal(y1, y2) and not np.array_equal(x1, x3)
    assert x1.shape == (2, 64, 64, 3) and y1.shape == (2, 64, 64, 1) and set(np.unique(y1)) <= {0.0, 1.0}


def test_train_scratch_detector_writes_a_loadable_deterministic_student(data_dir, tmp_path):
    kw = dict(steps=2, seed=1, batch_size=2, patch_size=32, width=4, progress=False, device="cpu")
    a = train_scratch_detector([data_dir], tmp_path / "a.safetensors", **kw)
    b = train_scratch_detector([data_dir], tmp_path / "b.safetensors", **kw)
    assert a.read_bytes() == b.read_bytes()
    meta = read_safetensors_metadata(a)
    assert meta["architecture"] == "ScratchUNet" and meta["task"] == "scratch" and meta["steps"] == "2"
    model = load_student_safetensors(a)
    p = model(torch.rand(1, 3, 32, 32))
    assert p.shape == (1, 1, 32, 32) and 0 <= float(p.min()) and float(p.max()) <= 1
    with pytest.raises(BadInputError, match="multiple of 4"):
        train_scratch_detector([data_dir], tmp_path / "c.safetensors", **{**kw, "patch_size": 30})


def test_cli_trains_the_scratch_student(data_dir, tmp_path):
    out = tmp_path / "s.safetensors"
    res = CliRunner().invoke(app, ["train", "--student", "scratch-unet", "--data", str(data_dir), "--out", str(out),
                                   "--steps", "1", "--batch-size", "1", "--patch-size", "32", "--width", "4"])
    assert res.exit_code == 0, res.output
    assert read_safetensors_metadata(out)["architecture"] == "ScratchUNet"
    res = CliRunner().invoke(app, ["train", "--student", "gfpgan", "--data", str(data_dir), "--out", str(out)])
    assert res.exit_code == 2 and "unknown student" in res.output


@pytest.mark.slow  # acceptance of the shipped weights on held-out photos
def test_shipped_detector_finds_held_out_synthetic_damage():
    """rocket.jpg was never trained on: the shipped student must find most of the damage drawn
    on it and mark little else (1-px tolerance, as for the figures in docs/)."""
    import cv2

    session = TorchSession(load_student_safetensors(WEIGHTS, "ScratchUNet"))
    clean = read_image(SAMPLES / "rocket.jpg").rgb[100:356, 100:356]
    found = near = marked = total = 0
    for k in range(3):
        rng = np.random.default_rng([77, k])
        d = damage_photo(age_photo(clean, rng), rng)
        pred = detect_defects(session, degrade_pair(d.image, 1, rng, SCAN_AFTER_DAMAGE), tile=128) >= 0.5
        grow = lambda m: cv2.dilate(m.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0  # noqa: E731
        found += np.count_nonzero(d.defects & grow(pred))
        total += np.count_nonzero(d.defects)
        near += np.count_nonzero(pred & grow(d.defects))
        marked += np.count_nonzero(pred)
    recall, precision = found / total, near / max(marked, 1)
    assert recall > 0.6 and precision > 0.6, (recall, precision)


def test_tiles_carry_a_one_channel_output(rgb_photo):
    """A 1-channel model through tiling equals the same model run on the whole image."""
    net = torch.nn.Conv2d(3, 1, 3, padding=1)
    session = TorchSession(torch.nn.Sequential(net, torch.nn.Sigmoid()))
    img = rgb_photo[:200, :260]
    whole = session.run(np.ascontiguousarray(img.transpose(2, 0, 1)[None]))[0, 0]
    tiled = detect_defects(session, img, tile=96, overlap=16)
    assert tiled.shape == img.shape[:2] and np.abs(tiled - whole).max() < 1e-5


def test_inpaint_changes_only_the_mask(rgb_photo):
    img = rgb_photo[:64, :64].copy()
    mask = np.zeros(img.shape[:2], bool)
    mask[30:33, 5:60] = True
    img[mask] = 1.0  # a white scratch
    out = inpaint(img, mask)
    assert np.array_equal(out[~mask], img[~mask])
    assert out[mask].mean() < 0.9  # filled from the surroundings, not left white
