"""Tiling with overlap and feathered blending: no seams, exact coverage, fixed-shape sessions."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from restorekit.core.errors import BadInputError
from restorekit.core.metrics import psnr
from restorekit.runtime.tiling import PLAN_TILE_FACTOR, edge_ramp, planned_tile, run_tiled, spread_side, tile_starts


class ConvSession:
    """A numpy stand-in for a conv net: 4 zero-padded 3x3 box blurs (receptive radius 4) then x2.

    Zero padding makes tile borders wrong, exactly as in a real CNN."""

    backend = "numpy"
    device = "cpu"

    def __init__(self, fixed_size=None, scale=2):
        self.fixed_size = fixed_size
        self.scale = scale
        self.calls = 0

    def run(self, x):
        self.calls += 1
        if self.fixed_size is not None:
            assert x.shape[2:] == self.fixed_size, x.shape
        img = x[0].transpose(1, 2, 0)
        k = np.full((3, 3), 1 / 9, np.float32)
        for _ in range(4):
            img = cv2.filter2D(img, -1, k, borderType=cv2.BORDER_CONSTANT)
        img = cv2.resize(img, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_NEAREST)
        return img.transpose(2, 0, 1)[None]


def test_tile_starts_cover_and_share_overlap():
    starts = tile_starts(1000, 256, 32)
    assert starts[0] == 0 and starts[-1] == 1000 - 256
    assert all(b - a <= 256 - 32 for a, b in zip(starts, starts[1:]))
    assert tile_starts(100, 256, 32) == [0]
    with pytest.raises(BadInputError):
        tile_starts(1000, 32, 32)


def test_ramp_is_partition_of_unity_for_regular_stride():
    n, ov = 64, 16
    a = edge_ramp(n, ov, True, False)
    b = edge_ramp(n, ov, False, True)
    # tile b starts n - ov after tile a: in the shared band the weights sum to 1
    total = a[n - ov:] + b[:ov]
    assert np.allclose(total, 1.0, atol=1e-5)
    assert a[-1] < 1e-5 and b[0] < 1e-5  # the outermost (corrupted) pixels get no weight


def test_feathered_tiles_match_whole_image(rgb_photo):
    img = rgb_photo[:300, :340]
    whole = ConvSession().run(img.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    sess = ConvSession()
    tiled = run_tiled(sess, img, 2, tile=96, overlap=24)
    assert tiled.shape == (600, 680, 3)
    assert sess.calls > 9
    assert psnr(tiled, whole) >= 60.0
    # Without overlap the zero-padded tile borders show as seams: the test would catch that.
    seamy = run_tiled(ConvSession(), img, 2, tile=96, overlap=0)
    assert psnr(seamy, whole) < 45.0


def test_fixed_size_session_pads_small_and_odd_images(rgb_photo):
    img = rgb_photo[:70, :53]
    sess = ConvSession(fixed_size=(64, 64))
    out = run_tiled(sess, img, 2, tile=999, overlap=16)  # the session's own size wins
    assert out.shape == (140, 106, 3)
    tiny = rgb_photo[:10, :12]
    assert run_tiled(sess, tiny, 2, overlap=16).shape == (20, 24, 3)


def test_bad_overlap_rejected(rgb_photo):
    with pytest.raises(BadInputError, match="overlap"):
        run_tiled(ConvSession(), rgb_photo[:200, :200], 2, tile=64, overlap=64)


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
def test_integer_samples_stream_into_integer_output(rgb_photo, dtype):
    """A photo kept in integer samples gives integer samples of the same depth, band by band: the
    same as the float path rounded, tile rows and uneven last rows included."""
    full = np.iinfo(dtype).max
    samples = np.rint(rgb_photo[:301, :339] * full).astype(dtype)
    out = run_tiled(ConvSession(), samples, 2, tile=96, overlap=24, out_dtype=dtype)
    assert out.dtype == dtype and out.shape == (602, 678, 3)
    as_float = run_tiled(ConvSession(), samples.astype(np.float32) / full, 2, tile=96, overlap=24)
    expected = np.clip(np.rint(as_float * full), 0, full)
    assert np.abs(out.astype(np.int64) - expected).max() <= 1
    # the float output of the streamed blend is the whole-image blend (no band lost at a seam)
    whole = ConvSession().run(samples.astype(np.float32)[None].transpose(0, 3, 1, 2) / full)[0].transpose(1, 2, 0)
    assert psnr(as_float, whole) >= 60.0


def test_an_overlap_of_half_the_tile_warns_with_its_cost_and_more_is_refused():
    from restorekit.runtime.tiling import check_overlap

    with pytest.warns(RuntimeWarning, match=r"half the tile \(256\): each pixel runs through about 4 tiles, 3.1x"):
        check_overlap(128, 256)
    with pytest.raises(BadInputError, match="more than half the tile"):
        check_overlap(129, 256)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_overlap(32, 256)  # the default: silent


def test_a_tile_that_does_not_fit_the_model_is_said():
    from restorekit.runtime.tiling import check_requested_tile

    with pytest.warns(RuntimeWarning, match=r"--tile 100 is not a multiple of 8 .*tiles of 104 are used"):
        check_requested_tile(100, None, 8)
    with pytest.warns(RuntimeWarning, match=r"--tile 512 is not used: .*fixed 256x256 input"):
        check_requested_tile(512, (256, 256), 1)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_requested_tile(256, (256, 256), 1)
        check_requested_tile(96, None, 8)
        check_requested_tile(0, None, 8)  # whole image


class ShapeLog(ConvSession):
    """A ConvSession that records the tile shapes it was given."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.shapes = set()

    def run(self, x):
        self.shapes.add(x.shape[2:])
        return super().run(x)


@pytest.mark.parametrize("length,max_side,overlap,mult", [(4000, 512, 32, 1), (3000, 512, 32, 1), (1000, 256, 32, 4),
                                                           (257, 256, 32, 1), (512, 256, 16, 8), (90, 256, 32, 4)])
def test_spread_tiles_are_as_many_as_full_ones_and_no_longer(length, max_side, overlap, mult):
    side = spread_side(length, max_side, overlap, mult)
    assert side % mult == 0 and side <= max(max_side, -(-length // mult) * mult)
    if length > max_side:
        assert len(tile_starts(length, side, overlap)) == len(tile_starts(length, max_side, overlap))
        assert side < max_side or length - overlap == (max_side - overlap) * len(tile_starts(length, max_side, overlap))
    else:
        assert side == -(-length // mult) * mult  # the whole axis in one tile


def test_planned_tiles_keep_the_tiling_bar_and_cut_the_work(rgb_photo):
    """A dynamic model without --tile runs the fewest tiles up to PLAN_TILE_FACTOR x the manifest's
    side, spread evenly: fewer pixels through the model, and the output within the tiling bar
    (>= 60 dB against the whole image) at every plan."""
    img = rgb_photo[:300, :340]
    whole = ConvSession().run(img.transpose(2, 0, 1)[None])[0].transpose(1, 2, 0)
    manifest_tile = 96
    assert planned_tile(manifest_tile, None, None) == PLAN_TILE_FACTOR * manifest_tile
    assert planned_tile(manifest_tile, 64, None) == 64  # an explicit --tile is kept
    assert planned_tile(manifest_tile, None, (96, 96)) == manifest_tile  # a fixed-size model runs its size
    work = {}
    for tile in (manifest_tile, planned_tile(manifest_tile, None, None)):
        sess = ShapeLog()
        out = run_tiled(sess, img, 2, tile=tile, overlap=24)
        assert psnr(out, whole) >= 60.0, tile
        assert len(sess.shapes) == 1 and max(max(s) for s in sess.shapes) <= tile
        (th, tw), = sess.shapes
        work[tile] = sess.calls * th * tw
    assert work[planned_tile(manifest_tile, None, None)] < 0.8 * work[manifest_tile]
    sess = ShapeLog()
    run_tiled(sess, img[:150, :170], 2, tile=PLAN_TILE_FACTOR * manifest_tile, overlap=24)
    assert sess.calls == 1 and sess.shapes == {(150, 170)}  # a photo that fits runs whole
