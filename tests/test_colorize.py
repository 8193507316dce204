"""Colorization (DDColor) the way a user gets it: a state dict laid out like the official checkpoint
-> `restorekit convert` -> a bundle -> `restorekit restore --colorize`, checked against the same
pipeline run in PyTorch.

Real DDColor weights cannot be downloaded here: the net is a randomly initialised instance of the
real architecture (spandrel), its last layer scaled so that the output lies in the range a trained
net gives (random DDColor predicts a*b* around 1e11). Inpainting: tests/test_inpaint.py.
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


def _ddcolor_state_dict() -> dict:
    from spandrel_extra_arches.architectures.DDColor import DDColor

    torch.manual_seed(0)
    net = DDColor(encoder_name="convnext-t", input_size=(TILE, TILE), nf=512, num_output_channels=2,
                  num_queries=16, dec_layers=1, last_norm="Spectral")
    sd = net.state_dict()
    sd["refine_net.0.0.weight_u"] *= 5e9  # spectral norm divides by u.W.v: the ab head's weights / 5e9
    return sd


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "ddcolor_paper_tiny.pth"
    torch.save(_ddcolor_state_dict(), path)
    return path


@pytest.fixture(scope="module")
def bundle(checkpoint, tmp_path_factory):
    return convert_checkpoint(checkpoint, tmp_path_factory.mktemp("bundles"))


def test_ddcolor_loads_as_a_colorizer(checkpoint):
    from restorekit.models.io import ColorizerIO
    from restorekit.models.loader import load_model

    dd = load_model(checkpoint)
    assert isinstance(dd.module, ColorizerIO)
    assert (dd.spec.task, dd.spec.in_channels, dd.spec.out_channels) == ("colorize", 3, 2)
    x = torch.rand(1, 3, TILE, TILE)
    with torch.inference_mode():
        ab = dd.module.model(x)
        assert torch.allclose(dd.module(x), (ab + 128.0) / 255.0)


def test_bundle_carries_the_task_io(bundle):
    from restorekit.bundle.manifest import read_manifest

    col = read_manifest(bundle)
    assert col.task == "colorize" and col.output.color_order == "ab" and col.input.color_order == "RGB"
    assert col.output.shape[1] == 2 and col.metrics["fidelity_psnr_db"] >= 60


def _bw_photo(tmp_path):
    rgb = read_image(SAMPLES / "astronaut.png").rgb[::2, ::2]
    gray = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
    path = tmp_path / "bw.png"
    write_image(path, gray)
    return path


def test_colorize_keeps_lightness_and_matches_pytorch(tmp_path, bundle, checkpoint):
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.restore.pipeline import Model, colorize
    from restorekit.runtime.task_io import lab

    src, out, log = _bw_photo(tmp_path), tmp_path / "c.png", tmp_path / "c.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "cast", "--colorize",
                              str(bundle), "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["colorize"]["ran"] and st["colorize"]["vs_reference"]["psnr_db"] >= 45
    photo_in, photo_out = read_image(src), read_image(out)
    assert not photo_out.was_gray
    chroma = np.hypot(*lab(photo_out.rgb)[:, :, 1:].transpose(2, 0, 1))
    assert chroma.mean() > 5  # colour was added
    l_in, l_out = lab(photo_in.rgb)[:, :, 0], lab(photo_out.rgb)[:, :, 0]
    assert np.abs(l_in - l_out).mean() < 0.5 and np.percentile(np.abs(l_in - l_out), 99) < 2.0  # 8-bit rounding
    torch_model = Model(TorchSession(load_model(checkpoint).module), "pytorch", tile=TILE)
    expected = colorize(torch_model, photo_in.rgb)
    assert psnr(photo_out.rgb, expected) > 40  # the same pipeline in PyTorch, up to the 8-bit output


def test_colour_photo_is_not_colorized(tmp_path, bundle):
    out, log = tmp_path / "k.png", tmp_path / "k.json"
    res = runner.invoke(app, ["restore", str(SAMPLES / "coffee.png"), "-o", str(out), "--stages", "tone",
                              "--colorize", str(bundle), "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert not st["colorize"]["ran"] and "keeps its colours" in st["colorize"]["reason"]


@pytest.mark.parametrize("option,needs", [("--face-model", "face"), ("--inpainter", "inpaint")])
def test_a_colorizer_given_to_another_stage_is_refused(tmp_path, bundle, option, needs):
    assert_wrong_task_refused(tmp_path, option, bundle, "colorize", needs)


def test_eval_feeds_the_colorizer_a_gray_photo(tmp_path, bundle):
    assert_eval_feeds_the_task(tmp_path, bundle, "colorize")
