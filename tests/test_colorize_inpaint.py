"""Colorization (DDColor) and inpainting (LaMa) the way a user gets them: a state dict laid out
like the official checkpoint -> `restorekit convert` -> a bundle -> `restorekit restore
--colorize / --inpainter`, checked against the same pipeline run in PyTorch.

Real DDColor/LaMa weights cannot be downloaded here: the nets are randomly initialised instances
of the real architectures (spandrel), with their last layer scaled so that the output lies in the
range a trained net gives (random DDColor predicts a*b* around 1e11, random LaMa a flat 0.5).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from typer.testing import CliRunner  # noqa: E402

from restorekit.cli.main import app  # noqa: E402
from restorekit.core.image import read_image, write_image  # noqa: E402
from restorekit.core.metrics import psnr  # noqa: E402
from tests.conftest import SAMPLES, SHARED, need_shared  # noqa: E402

runner = CliRunner()
TILE = 64


def _ddcolor_state_dict() -> dict:
    from spandrel_extra_arches.architectures.DDColor import DDColor

    torch.manual_seed(0)
    net = DDColor(encoder_name="convnext-t", input_size=(TILE, TILE), nf=512, num_output_channels=2,
                  num_queries=16, dec_layers=1, last_norm="Spectral")
    sd = net.state_dict()
    sd["refine_net.0.0.weight_u"] *= 5e9  # spectral norm divides by u.W.v: the ab head's weights / 5e9
    return sd


def _lama_state_dict() -> dict:
    from spandrel.architectures.LaMa import LaMa

    torch.manual_seed(0)
    sd = LaMa(in_nc=4, out_nc=3).state_dict()
    sd["model.model.34.weight"] *= 40.0  # the conv before the sigmoid: a textured fill, not a flat 0.5
    return sd


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.save(_ddcolor_state_dict(), d / "ddcolor_paper_tiny.pth")
    torch.save(_lama_state_dict(), d / "big-lama.pth")
    return d


def _convert(path, out, target="onnx"):
    res = runner.invoke(app, ["convert", str(path), "--target", target, "--tile", str(TILE), "--out", str(out),
                              "--eval-images", str(SAMPLES)])
    assert res.exit_code == 0, res.output
    return out / path.stem / f"{target}-fp32"


@pytest.fixture(scope="module")
def bundles(checkpoints, tmp_path_factory):
    out = tmp_path_factory.mktemp("bundles")
    return {"colorize": _convert(checkpoints / "ddcolor_paper_tiny.pth", out),
            "inpaint": _convert(checkpoints / "big-lama.pth", out)}


def test_ddcolor_and_lama_load_as_their_tasks(checkpoints):
    from restorekit.models.io import ColorizerIO, MaskedInput
    from restorekit.models.loader import load_model

    dd = load_model(checkpoints / "ddcolor_paper_tiny.pth")
    assert isinstance(dd.module, ColorizerIO)
    assert (dd.spec.task, dd.spec.in_channels, dd.spec.out_channels) == ("colorize", 3, 2)
    x = torch.rand(1, 3, TILE, TILE)
    with torch.inference_mode():
        ab = dd.module.model(x)
        assert torch.allclose(dd.module(x), (ab + 128.0) / 255.0)
    lama = load_model(checkpoints / "big-lama.pth")
    assert isinstance(lama.module, MaskedInput)
    assert (lama.spec.task, lama.spec.in_channels, lama.spec.out_channels, lama.spec.multiple_of) == ("inpaint", 4, 3, 8)


def test_bundles_carry_the_task_io(bundles):
    from restorekit.bundle.manifest import read_manifest

    col, inp = read_manifest(bundles["colorize"]), read_manifest(bundles["inpaint"])
    assert col.task == "colorize" and col.output.color_order == "ab" and col.input.color_order == "RGB"
    assert col.output.shape[1] == 2 and col.metrics["fidelity_psnr_db"] >= 60
    assert inp.task == "inpaint" and inp.input.color_order == "RGBM" and inp.input.shape[1] == 4
    assert inp.metrics["fidelity_psnr_db"] >= 60


def _bw_photo(tmp_path):
    rgb = read_image(SAMPLES / "astronaut.png").rgb[::2, ::2]
    gray = np.repeat(rgb.mean(axis=2, keepdims=True), 3, axis=2)
    path = tmp_path / "bw.png"
    write_image(path, gray)
    return path


def test_colorize_keeps_lightness_and_matches_pytorch(tmp_path, bundles, checkpoints):
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.restore.pipeline import Model, colorize
    from restorekit.runtime.task_io import lab

    src, out, log = _bw_photo(tmp_path), tmp_path / "c.png", tmp_path / "c.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(out), "--stages", "cast", "--colorize",
                              str(bundles["colorize"]), "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["colorize"]["ran"] and st["colorize"]["vs_reference"]["psnr_db"] >= 45
    photo_in, photo_out = read_image(src), read_image(out)
    assert not photo_out.was_gray
    chroma = np.hypot(*lab(photo_out.rgb)[:, :, 1:].transpose(2, 0, 1))
    assert chroma.mean() > 5  # colour was added
    l_in, l_out = lab(photo_in.rgb)[:, :, 0], lab(photo_out.rgb)[:, :, 0]
    assert np.abs(l_in - l_out).mean() < 0.5 and np.percentile(np.abs(l_in - l_out), 99) < 2.0  # 8-bit rounding
    torch_model = Model(TorchSession(load_model(checkpoints / "ddcolor_paper_tiny.pth").module), "pytorch", tile=TILE)
    expected = colorize(torch_model, photo_in.rgb)
    assert psnr(photo_out.rgb, expected) > 40  # the same pipeline in PyTorch, up to the 8-bit output


def test_colour_photo_is_not_colorized(tmp_path, bundles):
    out, log = tmp_path / "k.png", tmp_path / "k.json"
    res = runner.invoke(app, ["restore", str(SAMPLES / "coffee.png"), "-o", str(out), "--stages", "tone",
                              "--colorize", str(bundles["colorize"]), "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert not st["colorize"]["ran"] and "keeps its colours" in st["colorize"]["reason"]


def test_inpainter_changes_only_masked_pixels_and_matches_pytorch(bundles, checkpoints):
    from restorekit.models.loader import load_model
    from restorekit.models.reference import TorchSession
    from restorekit.restore.defects import inpaint_with_model
    from restorekit.runtime import load_bundle
    from restorekit.runtime.task_io import scratch_mask

    rgb = read_image(SAMPLES / "chelsea.png").rgb  # 300x451: several windows
    hole = scratch_mask(*rgb.shape[:2], seed=3) > 0
    session = load_bundle(bundles["inpaint"]).session
    out = inpaint_with_model(session, rgb, hole, tile=TILE, multiple_of=8)
    assert np.array_equal(out[~hole], rgb[~hole])
    assert np.abs(out[hole] - rgb[hole]).mean() > 0.01  # the holes were filled by the model
    ref = inpaint_with_model(TorchSession(load_model(checkpoints / "big-lama.pth").module), rgb, hole, tile=TILE,
                             multiple_of=8)
    assert psnr(out[hole], ref[hole]) >= 45


def test_restore_uses_the_inpainter(tmp_path, bundles):
    src = tmp_path / "s.png"
    rgb = read_image(SAMPLES / "camera.png").rgb[::2, ::2].copy()
    rgb[:, 100:103] = 1.0  # a bright vertical scratch
    write_image(src, rgb)
    log = tmp_path / "s.json"
    res = runner.invoke(app, ["restore", str(src), "-o", str(tmp_path / "o.png"), "--stages", "defects",
                              "--inpainter", str(bundles["inpaint"]), "--reference", "--json", str(log)])
    assert res.exit_code == 0, res.output
    st = {s["stage"]: s for s in json.loads(log.read_text())["photos"][0]["stages"]}
    assert st["defects"]["ran"] and "big-lama onnx-fp32" in st["defects"]["settings"]["inpaint"]
    assert st["defects"]["inpaint_vs_reference"]["psnr_db"] >= 45


@pytest.mark.parametrize("option,bundle,needs", [("--face-model", "colorize", "face"),
                                                 ("--inpainter", "colorize", "inpaint"),
                                                 ("--colorize", "inpaint", "colorize"),
                                                 ("--bundle", "inpaint", "restore")])
def test_a_bundle_of_the_wrong_task_is_refused(tmp_path, bundles, option, bundle, needs):
    args = ["restore", str(SAMPLES / "camera.png"), "-o", str(tmp_path / "x.png"), option, str(bundles[bundle])]
    if option == "--face-model":  # the face model is loaded only with a face detector
        args += ["--face-detector", str(need_shared(SHARED / "weights" / "retinaface_mobilenet0.25.pth"))]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    article = "an" if needs[0] in "aeiou" else "a"
    assert f"{bundle} bundle; this stage needs {article} {needs} model" in res.output
    assert not (tmp_path / "x.png").exists()


def test_eval_feeds_each_task_its_input(tmp_path, bundles):
    for task in ("colorize", "inpaint"):
        out = tmp_path / f"{task}.json"
        res = runner.invoke(app, ["eval", str(bundles[task]), "--images", str(SAMPLES), "--count", "2",
                                  "--json", str(out)])
        assert res.exit_code == 0, res.output
        data = json.loads(out.read_text())
        assert data["bundle"]["task"] == task and data["summary"]["psnr_db_mean"] >= 60
