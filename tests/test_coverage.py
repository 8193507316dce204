"""Registry-driven conversion coverage: every architecture in ``restorekit.models.arches`` x ONNX/TFLite
(small configs, tiny inputs) must do what the registry's ``expect`` says: ``ok`` reaches 60 dB vs
PyTorch, ``fail`` raises ConversionError, ``bad`` converts but misses (or cannot run). When a
converter fix changes an outcome, update the entry's ``expect``."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from restorekit.build.convert import convert_model

from restorekit.convert import ConversionError  # noqa: E402
from restorekit.core.metrics import psnr  # noqa: E402
from restorekit.models.arches import ARCHES  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FULL = os.environ.get("RESTOREKIT_FULL_COVERAGE") == "1"
# heavy even in their small config (tens of M params or a fixed 512 input), or slow to export
HEAVY = {"CodeFormer": "fixed 512x512 input", "DDColor": "ConvNeXt-T encoder (42 M params)",
         "LaMa": "big-lama generator has no small config (51 M params)",
         # ~12 s per target each on 2 cores: keeps the file under ~90 s (scripts/coverage.py covers them)
         "SCUNet": "Swin-Conv blocks, 23 MB even in the small config", "RetinaFace-mnet0.25": "slow export (~12 s)"}


def _input(arch, spec) -> np.ndarray:
    import cv2

    size = spec.fixed_size or max(32, spec.multiple_of)
    img = cv2.cvtColor(cv2.imread(str(ROOT / "sample_images/astronaut.png")), cv2.COLOR_BGR2RGB)
    img = cv2.resize(img[:256, 128:384], (size, size), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0
    x = img.transpose(2, 0, 1)[None]
    if spec.in_channels == 4:
        x = np.concatenate([x, np.zeros((1, 1, size, size), np.float32)], axis=1)
        x[:, 3, size // 4: size // 2, size // 4: size // 2] = 1.0
    return np.ascontiguousarray(x)


#: The registry entries this suite converts; the HEAVY ones are measured by scripts/coverage.py
#: (docs/coverage.md) and join here with RESTOREKIT_FULL_COVERAGE=1.
TESTED = [n for n in ARCHES if FULL or n not in HEAVY]
#: Entries that take 5 s or more per target even in their small config: the full suite only.
SLOW = {"SwinIR", "NAFNet", "GFPGAN"}


@pytest.mark.parametrize("target", ["onnx", "tflite"])
@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in TESTED])
def test_conversion_matches_registry(name, target, tmp_path):
    if target == "tflite":
        pytest.importorskip("litert_torch")
    arch = ARCHES[name]
    expect = arch.expect[target]
    torch.manual_seed(0)
    model, spec = arch.build(small=True), arch.spec(small=True)
    x = _input(arch, spec)
    if expect == "fail":
        with pytest.raises(ConversionError):
            convert_model(model, spec, target, tmp_path, tile=x.shape[-1])
        return
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).numpy()
    conv = convert_model(model, spec, target, tmp_path, tile=x.shape[-1])
    from restorekit.runtime.onnx import OnnxSession
    from restorekit.runtime.tflite import TFLiteSession

    try:
        out = (OnnxSession if target == "onnx" else TFLiteSession)(conv.path, conv.input, conv.output).run(x)
        good = (np.abs(out - ref).max() <= 1e-3) if spec.task == "detect" else psnr(out, ref, peak=max(1.0, float(np.abs(ref).max()))) >= 60.0
    except Exception:
        good = False
    assert good == (expect == "ok"), (
        f"{name} -> {target}: registry expects {expect!r} but the file {'matches' if good else 'does not match'} "
        "PyTorch; update ARCHES[...].expect")
