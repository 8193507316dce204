"""Float preparation before int8: range equalization is exact, GPTQ rounding lands on the int8
grid and beats round-to-nearest on the layer's own inputs, and int8 bundles record both."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

from restorekit.quantize.prepare import equalize_ranges, gptq_round  # noqa: E402


class Chain(nn.Module):
    """conv -> PReLU -> conv -> relu (functional) -> conv, with badly balanced channel ranges."""

    def __init__(self):
        super().__init__()
        self.c1, self.act, self.c2, self.c3 = nn.Conv2d(3, 8, 3, padding=1), nn.PReLU(8), nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 3, 3, padding=1)
        with torch.no_grad():
            self.c1.weight.mul_(torch.logspace(-2, 1, 8).view(-1, 1, 1, 1))  # channel ranges over 3 decades
            self.act.weight.uniform_(-0.5, 0.5)

    def forward(self, x):
        return self.c3(F.relu(self.c2(self.act(self.c1(x)))))


def _tiles(n=4, size=24, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.random((1, 3, size, size), dtype=np.float32) for _ in range(n)]


def test_equalization_is_exact_and_balances_ranges():
    torch.manual_seed(0)
    net, tiles = Chain().eval(), _tiles()
    eq, pairs = equalize_ranges(net, tiles, 0.5)
    assert pairs == 2  # c1-PReLU-c2 and c2-relu-c3
    x = torch.from_numpy(_tiles(1, 32, seed=1)[0])
    with torch.no_grad():
        assert torch.allclose(eq(x), net(x), atol=1e-5, rtol=1e-5)
        spread = lambda m: (lambda r: float(r.max() / r.min()))(m.c1(x).abs().amax(dim=(0, 2, 3)))  # noqa: E731
        # alpha 0.5 meets activation and weight ranges half-way: the spread of channel ranges ~ its square root
        assert spread(eq) < spread(net) ** 0.6


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_equalization_alpha_balances_activations_or_weights(alpha):
    """alpha 1 makes every channel of the activation span the same range (all the balance on the
    activations); alpha 0 makes every input channel of the next conv's weights span the same range
    (the c2 -> c3 pair then rescales c2's output channels: its input channels stay within a few %)."""
    torch.manual_seed(0)
    net, tiles = Chain().eval(), _tiles()
    eq, _ = equalize_ranges(net, tiles, alpha)
    with torch.no_grad():
        act = torch.cat([eq.c1(torch.from_numpy(t)) for t in tiles]).abs().amax(dim=(0, 2, 3))  # what it balances
        wts = eq.c2.weight.abs().amax(dim=(0, 2, 3))
    spread = lambda r: float(r.max() / r.min())  # noqa: E731
    if alpha == 1.0:
        assert spread(act) < 1.1 and spread(wts) > 2.0
    else:
        assert spread(wts) < 1.1 and spread(act) > 2.0


def test_recipe_equalization_alpha_reaches_the_preparation(tmp_path):
    import onnx
    from onnx import numpy_helper

    from restorekit.build.convert import convert_model
    from restorekit.models.spec import ModelSpec
    from restorekit.quantize.recipe import recipe_from_dict

    spec = ModelSpec(name="chain", architecture="Chain", task="restore", scale=1)
    torch.manual_seed(0)
    net, tiles = Chain().eval(), _tiles()
    weights = {}
    for alpha in (0.5, 0.9):
        recipe = recipe_from_dict({"scheme": "w8a8", "equalization_alpha": alpha})
        (tmp_path / str(alpha)).mkdir()
        conv = convert_model(net, spec, "onnx", tmp_path / str(alpha), precision="w8a8", tile=24, calib=tiles,
                             recipe=recipe)
        prep = conv.recipe["float_preparation"]
        assert prep["equalization_alpha"] == alpha and f"(alpha {alpha:g})" in prep["how"]
        assert conv.recipe["recipe"]["equalization_alpha"] == alpha
        weights[alpha] = sorted(float(np.abs(numpy_helper.to_array(i)).sum())
                                for i in onnx.load(str(conv.path)).graph.initializer if i.dims and len(i.dims) == 4)
    assert weights[0.5] != weights[0.9]


@pytest.mark.parametrize("rewrite", ["prelu_to_max_form", "prelu_to_relu_form"])
def test_equalization_sees_through_the_edge_rewrites_of_prelu(rewrite):
    """The TFLite model's PReLU is a rewritten module: it must still count as the activation of a
    Conv -> act -> Conv pair (before the fix, tracing failed and TFLite int8 lost equalization)."""
    from restorekit.convert import rewrites

    torch.manual_seed(0)
    net, tiles = Chain().eval(), _tiles()
    edge, replaced = getattr(rewrites, rewrite)(net)
    assert replaced == ["act"]
    eq, pairs = equalize_ranges(edge, tiles)
    assert pairs == 2
    x = torch.from_numpy(_tiles(1, 32, seed=1)[0])
    with torch.no_grad():
        assert torch.allclose(eq(x), net(x), atol=1e-5, rtol=1e-5)


def test_gptq_weights_lie_on_the_grid_and_beat_round_to_nearest():
    torch.manual_seed(0)
    net, tiles = Chain().eval(), _tiles(8)
    q, n = gptq_round(net, tiles)
    assert n == 3
    w, w0 = q.c2.weight.detach(), net.c2.weight.detach()
    scale = w0.abs().amax(dim=(1, 2, 3), keepdim=True) / 127
    assert torch.allclose(w / scale, torch.round(w / scale), atol=1e-4)  # on the per-channel int8 grid
    rtn = torch.round(w0 / scale).clamp(-127, 127) * scale
    with torch.no_grad():
        h = [net.act(net.c1(torch.from_numpy(t))) for t in _tiles(4, 24, seed=2)]  # the layer's real inputs, unseen
        err = lambda wq: sum(float((F.conv2d(x, wq, net.c2.bias, padding=1) - net.c2(x)).pow(2).mean()) for x in h)  # noqa: E731
    assert err(w) < 0.8 * err(rtn)


class DeadInput(nn.Module):
    """conv -> relu -> conv where one hidden channel is always zero and carries c2's largest weights."""

    def __init__(self):
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 6, 3, padding=1)
        with torch.no_grad():
            self.c1.bias[0] = -100.0  # channel 0 never fires
            self.c2.weight[:, 0] *= 20.0

    def forward(self, x):
        return self.c2(F.relu(self.c1(x)))


@pytest.mark.parametrize("net_cls", [Chain, DeadInput])
def test_gptq_rows_keep_their_max_at_127_steps(net_cls):
    """Runtimes re-derive each channel's grid as max|w| / 127 from the weights they are given: GPTQ
    must leave every row's largest weight at exactly 127 steps, or they round it a second time."""
    torch.manual_seed(0)
    net, tiles = net_cls().eval(), _tiles(8)
    q, _ = gptq_round(net, tiles)
    for name, conv in q.named_modules():
        if isinstance(conv, nn.Conv2d):
            w = conv.weight.detach().reshape(conv.weight.shape[0], -1).double()
            steps = w / (w.abs().amax(dim=1, keepdim=True) / 127)
            assert torch.allclose(steps, torch.round(steps), atol=1e-3), name
    if net_cls is DeadInput:  # the dead channel's weights are dropped, and the grid is the live weights'
        assert float(q.c2.weight[:, 0].abs().max()) == 0.0
        live = net.c2.weight.detach()[:, 1:].abs().amax(dim=(1, 2, 3))
        assert torch.allclose(q.c2.weight.detach().abs().amax(dim=(1, 2, 3)), live, rtol=1e-6)


def test_int8_bundles_record_the_preparation(tmp_path):
    from restorekit.build.convert import convert_model
    from restorekit.models.spec import ModelSpec

    torch.manual_seed(0)
    spec = ModelSpec(name="chain", architecture="Chain", task="restore", scale=1)
    conv = convert_model(Chain().eval(), spec, "onnx", tmp_path, "int8", tile=24, calib=_tiles())
    prep = conv.recipe["float_preparation"]
    assert prep["equalized_pairs"] == 2 and prep["gptq_rounded_convs"] == 3


def test_w8a16_keeps_the_milder_equalization_by_default(tmp_path):
    """16-bit activations leave the weights' rounding dominant: w8a16 prepares with alpha 0.5 unless
    the recipe says otherwise; int8-activation schemes take the stronger default."""
    from restorekit.build.convert import convert_model
    from restorekit.models.spec import ModelSpec
    from restorekit.quantize.recipe import (A16_EQUALIZATION_ALPHA, DEFAULT_EQUALIZATION_ALPHA, builtin_recipe,
                                            recipe_from_dict)

    assert A16_EQUALIZATION_ALPHA < DEFAULT_EQUALIZATION_ALPHA
    assert builtin_recipe("w8a16").equalization_alpha == A16_EQUALIZATION_ALPHA
    assert builtin_recipe("w8a8").equalization_alpha == builtin_recipe("mixed").equalization_alpha == DEFAULT_EQUALIZATION_ALPHA
    assert recipe_from_dict({"scheme": "w8a16", "equalization_alpha": 0.9}).equalization_alpha == 0.9
    spec = ModelSpec(name="chain", architecture="Chain", task="restore", scale=1)
    torch.manual_seed(0)
    conv = convert_model(Chain().eval(), spec, "onnx", tmp_path, precision="w8a16", tile=24, calib=_tiles())
    assert conv.recipe["float_preparation"]["equalization_alpha"] == A16_EQUALIZATION_ALPHA
