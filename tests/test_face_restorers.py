"""GFPGAN and CodeFormer load as 512x512 face models with [0, 1] io and deterministic outputs.

Checkpoints are randomly initialised instances of the real architectures (spandrel's classes),
saved as state dicts the way the official files are: conversion fidelity does not depend on
training. The full-size ONNX bundle + ``restorekit run`` round trip takes 2-5 minutes per model
here, so it runs with RESTOREKIT_FULL_COVERAGE=1 (measured runs are in docs/coverage.md).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from restorekit.models.io import FaceNetIO
from restorekit.models.loader import load_model

SHARED_FACES = Path(__file__).resolve().parents[2] / "shared" / "photos" / "faces"
FULL = os.environ.get("RESTOREKIT_FULL_COVERAGE") == "1"


def _save(module: torch.nn.Module, path: Path) -> Path:
    save_file({k: v.contiguous() for k, v in module.state_dict().items()}, str(path))
    return path


def _gfpgan(**kw):
    from spandrel.architectures.GFPGAN import GFPGAN

    torch.manual_seed(0)
    return GFPGAN(**kw).eval()


@pytest.fixture(scope="module")
def gfpgan(tmp_path_factory):
    """The published GFPGAN v1.4 (80 M params) from the registry, saved as the official checkpoint
    (``GFPGANv1.4.pth``, state dict under ``params_ema``): (the in-code module, the file)."""
    from restorekit.models.arches import ARCHES

    torch.manual_seed(0)
    model = ARCHES["GFPGAN"].build(small=False)
    return model, Path(ARCHES["GFPGAN"].save_checkpoint(model, tmp_path_factory.mktemp("gfpgan"), small=False))


@pytest.fixture(scope="module")
def gfpgan_file(gfpgan):
    return gfpgan[1]


@pytest.mark.slow  # a full-size GFPGAN v1.4 (80 M params) at 512x512
def test_gfpgan_checkpoint_loads_as_a_512_face_model_with_unit_range_io(gfpgan):
    """The published configuration through the loader (its small one is refused:
    tests/test_loader_path.py): the registry's spec, the same computation, [0, 1] io."""
    from restorekit.models.arches import ARCHES

    model, path = gfpgan
    loaded = load_model(path)
    spec, registry = loaded.spec, ARCHES["GFPGAN"].spec(small=False)
    assert (spec.architecture, spec.task, spec.scale, spec.fixed_size) == ("GFPGAN", "face", 1, 512)
    assert (spec.in_channels, spec.out_channels) == (registry.in_channels, registry.out_channels)
    assert isinstance(loaded.module, FaceNetIO)
    x = torch.rand(1, 3, 512, 512, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        a = loaded.module(x)
        raw = loaded.module.model(x * 2 - 1, return_rgb=False, randomize_noise=False)[0]
        assert torch.allclose(a, model(x), rtol=1e-5, atol=1e-5)  # what the in-code network computes
    assert a.shape == (1, 3, 512, 512)
    assert float(a.min()) >= 0.0 and float(a.max()) <= 1.0
    # the wrapper maps [0, 1] to the network's [-1, 1] and back, with the stored noise buffers: a
    # second call (this one, with randomize_noise off) gives the same image, not fresh noise per call
    assert torch.allclose(a, ((raw + 1) / 2).clamp(0, 1))


def test_face_wrapper_exports_to_onnx_with_constant_noise(tmp_path):
    """A small GFPGAN through FaceNetIO: the ONNX graph has no random op and matches PyTorch."""
    import onnx
    import onnxruntime as ort

    from restorekit.convert.onnx import export_fp32
    from restorekit.models.spec import ModelSpec

    net = FaceNetIO(_gfpgan(out_size=64, num_style_feat=64, channel_multiplier=1, num_mlp=2, narrow=0.25),
                    return_rgb=False, randomize_noise=False).eval()
    spec = ModelSpec(name="tiny-gfpgan", architecture="GFPGAN", task="face", scale=1, fixed_size=64)
    path = tmp_path / "m.onnx"
    export_fp32(net, spec, path, 64)
    ops = {n.op_type for n in onnx.load(str(path)).graph.node}
    assert not ops & {"RandomNormal", "RandomNormalLike", "RandomUniform", "RandomUniformLike"}
    x = np.random.default_rng(2).random((1, 3, 64, 64), dtype=np.float32)
    y = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"input": x})[0]
    with torch.inference_mode():
        ref = net(torch.from_numpy(x)).numpy()
    assert np.abs(y - ref).max() < 1e-4


@pytest.mark.slow  # CodeFormer at its fixed 512x512 input
def test_codeformer_fidelity_weight_is_baked_in(tmp_path):
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    f = _save(CodeFormer(dim_embd=64, n_head=8, n_layers=1, codebook_size=64), tmp_path / "codeformer.safetensors")
    loaded = load_model(f)
    assert (loaded.spec.architecture, loaded.spec.task, loaded.spec.fixed_size) == ("CodeFormer", "face", 512)
    assert loaded.module.call_kwargs == {"weight": 0.5}


def _bundle_and_run(checkpoint: Path, tmp_path: Path):
    from typer.testing import CliRunner

    from restorekit.cli.main import app
    from restorekit.core.image import read_image

    runner = CliRunner()
    out = tmp_path / "b"
    r = runner.invoke(app, ["bundle", str(checkpoint), "--targets", "onnx", "--precisions", "fp32",
                            "--eval-images", str(SHARED_FACES), "--out", str(out)])
    assert r.exit_code == 0, r.output
    face = sorted(SHARED_FACES.glob("*.png"))[0]
    dst = tmp_path / "restored.png"
    r = runner.invoke(app, ["run", str(out / checkpoint.stem / "onnx-fp32"), str(face), "-o", str(dst)])
    assert r.exit_code == 0, r.output
    img = read_image(dst).rgb
    assert img.shape == (512, 512, 3)
    ref = load_model(checkpoint).module
    with torch.inference_mode():
        expect = ref(torch.from_numpy(read_image(face).rgb.transpose(2, 0, 1)[None].copy())).numpy()[0]
    assert np.abs(img - expect.transpose(1, 2, 0)).max() <= 1.5 / 255  # 8-bit output rounding


@pytest.mark.skipif(not FULL, reason="full-size GFPGAN/CodeFormer bundles take 2-5 min each: RESTOREKIT_FULL_COVERAGE=1")
@pytest.mark.skipif(not SHARED_FACES.is_dir(), reason="needs ../shared/photos/faces (512x512 faces)")
def test_gfpgan_onnx_bundle_runs_on_a_512_face(gfpgan_file, tmp_path):
    _bundle_and_run(gfpgan_file, tmp_path)


@pytest.mark.skipif(not FULL, reason="full-size GFPGAN/CodeFormer bundles take 2-5 min each: RESTOREKIT_FULL_COVERAGE=1")
@pytest.mark.skipif(not SHARED_FACES.is_dir(), reason="needs ../shared/photos/faces (512x512 faces)")
def test_codeformer_onnx_bundle_runs_on_a_512_face(tmp_path):
    from spandrel_extra_arches.architectures.CodeFormer import CodeFormer

    torch.manual_seed(0)
    _bundle_and_run(_save(CodeFormer(), tmp_path / "codeformer-random.safetensors"), tmp_path)
