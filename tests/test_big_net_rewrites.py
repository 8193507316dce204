"""The big restoration networks reach TFLite (and CodeFormer Core ML) through exact edge rewrites:
GFPGAN (style-code flatten by reshape, StyleGAN2 modulated conv with static weights), CodeFormer
(traceable sizes, codebook lookup by gather instead of scatter), LaMa (orthonormal FFT as DFT
matmuls, transposed conv with output padding as an unpadded one cropped). Each rewrite is measured
against the unrewritten PyTorch model on a real photo, and the converted file against PyTorch."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from torch import nn  # noqa: E402

from restorekit.convert.rewrites import (  # noqa: E402
    REWRITES, CroppedConvTranspose2d, GatherVectorQuantizer, MatmulFourierUnit, ReshapeGFPGAN, StaticModulatedConv2d,
    TraceableCodeFormer, apply_rewrites, codeformer_to_static_ops, conv_transpose_to_crop, fft_to_matmul_dft,
    gfpgan_to_static_ops)
from restorekit.core.metrics import psnr  # noqa: E402
from restorekit.core.targets import TARGETS  # noqa: E402
from restorekit.models.arches import ARCHES  # noqa: E402
from restorekit.runtime.task_io import example_input  # noqa: E402
from tests.conftest import SAMPLES  # noqa: E402

pytest.importorskip("spandrel")
MIN_DB = 60.0
#: The full-size conversions (51 M-param LaMa, 94 M-param CodeFormer at 512) take 0.5-2 minutes
#: each on 2 cores: they run with RESTOREKIT_FULL_COVERAGE=1 and in scripts/coverage.py
#: (docs/coverage.md); the rewritten modules themselves are converted below in tiny nets.
FULL = pytest.mark.skipif(__import__("os").environ.get("RESTOREKIT_FULL_COVERAGE") != "1",
                          reason="full-size conversion: RESTOREKIT_FULL_COVERAGE=1 (measured by scripts/coverage.py)")


def _photo(size: int, task: str = "face") -> np.ndarray:
    """The astronaut photo (public domain), resized to ``size`` (a face crop), NCHW float32 in [0, 1];
    for ``inpaint`` RGB + a scratch mask (4 channels)."""
    from restorekit.core.image import read_image

    rgb = read_image(SAMPLES / "astronaut.png").rgb
    if size != rgb.shape[0]:
        rgb = cv2.resize(rgb[:320, 96:416], (size, size), interpolation=cv2.INTER_AREA)  # the face
    x = np.ascontiguousarray(rgb.transpose(2, 0, 1)[None], dtype=np.float32)
    return example_input(task, x)


@torch.inference_mode()
def _run(model: nn.Module, x: np.ndarray) -> np.ndarray:
    return model(torch.from_numpy(x)).numpy()


def _tflite(model, spec, x, tmp_path, tile: int):
    """Convert ``model`` to fp32 TFLite with the target's rewrites; its output on ``x`` and the recipe."""
    from restorekit.build.convert import convert_model
    from restorekit.runtime.tflite import TFLiteSession

    conv = convert_model(model, spec, "tflite", tmp_path, "fp32", tile=tile)
    return TFLiteSession(conv.path, conv.input, conv.output).run(x), conv.recipe


def _small(name: str, seed: int = 0):
    torch.manual_seed(seed)
    arch = ARCHES[name]
    return arch.build(small=True), arch.spec(small=True)


def test_targets_apply_the_big_net_rewrites_and_they_leave_other_models_alone():
    assert {"gfpgan", "codeformer", "fft_matmul", "conv_transpose_crop"} <= set(TARGETS["tflite"].rewrites)
    assert "codeformer" in TARGETS["coreml"].rewrites
    assert all(name in REWRITES for t in TARGETS.values() for name in t.rewrites)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 3, 4, 2, 1))
    for name in ("gfpgan", "codeformer", "fft_matmul", "conv_transpose_crop"):
        same, done = REWRITES[name](net)
        assert same is net and done == []  # no copy, nothing recorded
    assert apply_rewrites(net, ("gfpgan", "codeformer", "fft_matmul", "conv_transpose_crop"))[1] == {}


@pytest.mark.parametrize("args", [(8, 4, 3, 2, 1, 1), (8, 4, 5, 3, 2, 1), (8, 4, 3, 2, 2, 1), (6, 4, 3, 2, 1, 1, 2)])
def test_cropped_conv_transpose_matches_output_padding(args):
    torch.manual_seed(0)
    groups = args[6] if len(args) > 6 else 1
    net = nn.Sequential(nn.ConvTranspose2d(*args[:5], output_padding=args[5], groups=groups))
    new, done = conv_transpose_to_crop(net)
    assert done == ["0"] and isinstance(new[0], CroppedConvTranspose2d) and type(net[0]) is nn.ConvTranspose2d
    x = torch.randn(2, args[0], 7, 9)
    with torch.inference_mode():
        assert new(x).shape == net(x).shape and float((new(x) - net(x)).abs().max()) < 1e-5


def test_matmul_fourier_unit_matches_the_orthonormal_fft():
    """The DFT-as-matmul FourierUnit against spandrel's rfftn / irfftn one, at even and odd sizes."""
    from spandrel.architectures.LaMa.__arch.LaMa import FourierUnit

    torch.manual_seed(0)
    unit = FourierUnit(6, 6).eval()
    with torch.no_grad():
        unit.bn.running_mean.uniform_(-0.2, 0.2)
        unit.bn.running_var.uniform_(0.5, 2.0)
    holder = nn.Sequential(unit)
    new, done = fft_to_matmul_dft(holder)
    assert done == ["0"] and isinstance(new[0], MatmulFourierUnit)
    for h, w in ((16, 16), (12, 10), (9, 7)):
        x = torch.randn(2, 6, h, w)
        with torch.inference_mode():
            ref, out = unit(x), new(x)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) < 1e-4 * float(ref.abs().max())


def test_gfpgan_rewrite_is_exact_in_pytorch():  # its TFLite conversion: tests/test_coverage.py [GFPGAN-tflite]
    model, _ = _small("GFPGAN")
    new, done = gfpgan_to_static_ops(model)
    assert done[0] == "model" and isinstance(new.model, ReshapeGFPGAN)
    assert sum(isinstance(m, StaticModulatedConv2d) for m in new.modules()) == len(done) - 1 > 0
    assert type(model.model).__name__ == "GFPGANv1Clean"  # the caller's model is untouched
    x = _photo(64)
    ref, out = _run(model, x), _run(new, x)
    assert np.abs(out - ref).max() < 1e-4 and psnr(out, ref) >= MIN_DB


@pytest.fixture(scope="module")
def codeformer():
    """The small CodeFormer (fixed 512 input), the photo and the unrewritten model's output."""
    model, spec = _small("CodeFormer")
    x = _photo(512)
    return model, spec, x, _run(model, x)


@pytest.mark.slow
def test_codeformer_rewrite_is_bit_exact_in_pytorch(codeformer):
    model, _, x, ref = codeformer
    new, done = codeformer_to_static_ops(model)
    assert done == ["model", "model.quantize"]
    assert isinstance(new.model, TraceableCodeFormer) and isinstance(new.model.quantize, GatherVectorQuantizer)
    out = _run(new, x)
    assert np.abs(out - ref).max() == 0.0
    # the quantizer's own forward (nearest entry, loss, stats) also agrees
    z = torch.randn(1, 256, 4, 4)
    with torch.inference_mode():
        a, b = model.model.quantize(z), new.model.quantize(z)
    assert torch.equal(a[0], b[0]) and torch.equal(a[2]["min_encodings"], b[2]["min_encodings"])


@pytest.mark.slow
@FULL
def test_codeformer_converts_to_tflite(codeformer, tmp_path):
    model, spec, x, ref = codeformer
    y, recipe = _tflite(model, spec, x, tmp_path, 512)
    assert recipe["rewrites"]["codeformer"] == 2
    assert psnr(y, ref) >= MIN_DB


@pytest.mark.slow
@FULL
def test_codeformer_converts_to_coreml(codeformer, tmp_path):
    """Core ML predictions need macOS: here the conversion itself (it failed on the scatter and on
    ``str(x.shape[-1])`` keys under ``torch.jit.trace``), and no scatter in the program."""
    from restorekit.build.convert import convert_model

    model, spec, _, _ = codeformer
    conv = convert_model(model, spec, "coreml", tmp_path, "fp32", tile=512)
    assert conv.path.exists() and conv.recipe["rewrites"]["codeformer"] == 2
    program = next(conv.path.rglob("model.mlmodel")).read_bytes()
    assert b"scatter" not in program and b"gather" in program


def test_lama_rewrite_is_exact_in_pytorch():
    """Measured on the generator's own output (every pixel), not only on the composited holes."""
    model, _ = _small("LaMa")
    new, done = apply_rewrites(model, ("fft_matmul", "conv_transpose_crop"))
    assert done["fft_matmul"] > 0 and done["conv_transpose_crop"] == 3
    x = torch.from_numpy(_photo(64, "inpaint"))
    img, mask = x[:, :3], x[:, 3:]
    with torch.inference_mode():
        ref = model.model.model(img * (1 - mask), mask).numpy()
        out = new.model.model(img * (1 - mask), mask).numpy()
    assert np.abs(out - ref).max() < 1e-4 and psnr(out, ref) >= MIN_DB


def test_lama_blocks_convert_to_tflite(tmp_path):
    """LaMa's two blockers in a tiny net: an orthonormal Fourier unit and a transposed conv with
    output padding reach TFLite through the target's rewrites and match PyTorch."""
    from spandrel.architectures.LaMa.__arch.LaMa import FourierUnit

    from restorekit.models.spec import ModelSpec

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), FourierUnit(8, 8),
                        nn.ConvTranspose2d(8, 8, 3, stride=2, padding=1, output_padding=1),
                        nn.Conv2d(8, 3, 3, stride=2, padding=1)).eval()
    spec = ModelSpec(name="lama-blocks", architecture="LaMa-blocks", task="inpaint", scale=1, in_channels=4)
    x = _photo(32, "inpaint")
    y, recipe = _tflite(net, spec, x, tmp_path, 32)
    assert recipe["rewrites"]["fft_matmul"] == 1 and recipe["rewrites"]["conv_transpose_crop"] == 1
    assert psnr(y, _run(net, x), peak=float(np.abs(_run(net, x)).max())) >= MIN_DB


@pytest.mark.slow
@FULL
def test_lama_converts_to_tflite(tmp_path):
    model, spec = _small("LaMa")
    x = _photo(64, "inpaint")
    y, recipe = _tflite(model, spec, x, tmp_path, 64)
    assert recipe["rewrites"]["fft_matmul"] > 0 and recipe["rewrites"]["conv_transpose_crop"] == 3
    ref = _run(model, x)
    holes = np.broadcast_to(x[:, 3:] > 0.5, ref.shape)
    assert psnr(y, ref) >= MIN_DB and psnr(y[holes], ref[holes]) >= MIN_DB  # the filled pixels alone too
