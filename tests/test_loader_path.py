"""Every registry architecture through the loader, as a user gives it: the small configuration's weights
saved like the official checkpoint (``Arch.save_checkpoint``: the inner network's state dict under the
official wrapper key) must be detected by ``models.loader.load_model`` as the same network: the spec a
bundle is made from (task, channels, scale) is the registry's, and the loaded module computes what the
in-code module computes. ``tests/test_coverage.py`` converts the in-code nets directly; this is the
check that catches a net the loader cannot rebuild (DDColor and LaMa did fail there)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("spandrel")

from restorekit.core.errors import BadInputError  # noqa: E402
from restorekit.models.arches import ARCHES  # noqa: E402
from restorekit.models.loader import load_model  # noqa: E402

#: What the loaded spec must share with the registry's (fixed_size / multiple_of may differ:
#: spandrel reports what the network pads to by itself).
SPEC_KEYS = ("task", "scale", "in_channels", "out_channels")
#: Tens of seconds even in the small configuration (build, load and two forward passes): the full suite
#: only. Of tests/test_coverage.py's HEAVY, DDColor (~7 s) and LaMa (~6 s) stay here: loading is what
#: failed for them, and it is cheap next to converting them.
SLOW = {"CodeFormer": "fixed 512x512 input, full VQGAN encoder/decoder (~45 s)"}


def _input(spec) -> torch.Tensor:
    size = spec.fixed_size or max(32, spec.multiple_of)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(1, spec.in_channels, size, size, generator=g)
    if spec.in_channels == 4:  # an inpainter's mask is binary
        x[:, 3] = (x[:, 3] > 0.8).float()
    return x


def _params(names):
    return [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n for n in names]


@pytest.mark.parametrize("name", _params([n for n, a in ARCHES.items() if a.small_loadable]))
def test_saved_checkpoint_loads_as_the_registry_net(name, tmp_path):
    arch = ARCHES[name]
    torch.manual_seed(0)
    model, spec = arch.build(small=True), arch.spec(small=True)
    loaded = load_model(arch.save_checkpoint(model, tmp_path, small=True))
    got = {k: getattr(loaded.spec, k) for k in SPEC_KEYS}
    assert got == {k: getattr(spec, k) for k in SPEC_KEYS}, f"{name}: the loader describes it differently"
    x = _input(spec)
    with torch.inference_mode():
        ref, out = model(x), loaded.module(x)
    assert out.shape == ref.shape
    assert torch.allclose(out, ref, rtol=1e-5, atol=1e-5), (
        f"{name}: the loaded network computes something else (max |diff| {float((out - ref).abs().max()):.3g}): "
        "a hyper-parameter spandrel cannot read from the weights differs from the small config")


@pytest.mark.parametrize("name", [n for n, a in ARCHES.items() if not a.small_loadable])
def test_small_config_marked_unloadable_is_refused(name, tmp_path):
    """``small_loadable=False`` is true: the loader refuses the small weights with a one-line reason
    (spandrel builds GFPGAN at its published configuration), so coverage uses the published one
    (loaded and compared with the in-code network in tests/test_face_restorers.py)."""
    arch = ARCHES[name]
    torch.manual_seed(0)
    path = arch.save_checkpoint(arch.build(small=True), tmp_path, small=True)
    with pytest.raises(BadInputError, match="could not build a model"):
        load_model(path)
