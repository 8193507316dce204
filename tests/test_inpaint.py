"""Inpainting (LaMa) the way a user gets it: big-lama's state dict laid out like the official
checkpoint -> `restorekit convert` -> a bundle -> `restorekit restore --inpainter`, checked against
the same pipeline run in PyTorch.

Real LaMa weights cannot be downloaded here: the net is a randomly initialised big-lama (spandrel;
LaMa has no smaller configuration, so this is the 51 M-parameter network and its ONNX export is
the largest single cost of the suite), with the conv before its sigmoid scaled so that it paints a
textured fill rather than a flat 0.5. Colorization: tests/test_colorize.py.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from restorekit.cli.main import app  # noqa: E402
from restorekit.core.image import read_image, write_image  # noqa: E402
from restorekit.core.metrics import psnr  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402
from tests.task_bundles import (TILE, assert_eval_feeds_the_task, assert_wrong_task_refused,  # noqa: E402
                                convert_checkpoint, runner)


def _lama_state_dict() -> dict:
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    sd = LaMa(in_nc=4, out_nc=3).state_dict()
    sd["model.model.34.weight"] *= 40.0  # the conv before the sigmoid: a textured fill, not a flat 0.5
    return sd


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "big-lama.pth"
    torch.save(_lama_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return convert_checkpoint(checkpoint, tmp_path_factory.mktemp("bundles"))


def test_lama_loads_as_an_inpainter(checkpoint):
    from restorekit.models.io import MaskedInput
    from restorekit.models.loader import load_model

    lama = load_model(checkpoint)
    assert isinstance(lama.module, MaskedInput)
    assert (lama.spec.task, lama.spec.in_channels, lama.spec.out_channels, lama.spec.multiple_of) == ("inpaint", 4, 3, 8)


def test_bundle_carries_the_task_io(bundle):
    from restorekit.bundle.manifest import read_manifest

    inp = read_manifest(bundle)
    assert inp.task == "inpaint" and inp.input.color_order == "RGBM" and inp.input.shape[1] == 4
    assert inp.metrics["fidelity_psnr_db"] >= 60


def test_inpainter_changes_only_masked_pixels_and_matches_pytorch(bundle, checkpoint):
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.restore.defects import inpaint_with_model
    from restorekit.runtime import load_bundle
    from restorekit.runtime.task_io import scratch_mask

    rgb = read_image(SAMPLES / "chelsea.png").rgb[::2, ::2].copy()  # 150x226: 12 windows of 64
    hole = scratch_mask(*rgb.shape[:2], seed=3) > 0
    session = load_bundle(bundle).session
    out = inpaint_with_model(session, rgb, hole, tile=TILE, multiple_of=8)
    assert np.array_equal(out[~hole], rgb[~hole])
    assert np.abs(out[hole] - rgb[hole]).mean() > 0.01  # the holes were filled by the model
    ref = inpaint_with_model(TorchSession(load_model(checkpoint).module), rgb, hole, tile=TILE,
                             multiple_of=8)
    assert psnr(out[hole], ref[hole]) >= 45


def test_restore_uses_the_inpainter(tmp_path, bundle):
    src = tmp_path / "s.png"
    rgb = read_image(SAMPLES / "camera.png").rgb[::2, ::2].copy()
    rgb[:, 100:103] = 1.0  # a bright vertical scratch
    write_image(src, rgb)
    log = tmp_path / "s.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"), "--stages", "defects",
                              "--inpainter", str(bundle), "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["defects"]["ran"] and "big-lama onnx-fp32" in st["defects"]["settings"]["inpaint"]
    assert st["defects"]["inpaint_vs_reference"]["psnr_db"] >= 45


@pytest.mark.parametrize("option,needs", [("--colorize", "colorize"), ("--bundle", "restore")])
def test_an_inpainter_given_to_another_stage_is_refused(tmp_path, bundle, option, needs):
    assert_wrong_task_refused(tmp_path, option, bundle, "inpaint", needs)


def test_eval_feeds_the_inpainter_a_masked_photo(tmp_path, bundle):
    assert_eval_feeds_the_task(tmp_path, bundle, "inpaint")
