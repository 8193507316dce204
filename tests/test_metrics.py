"""Image metrics: CIEDE2000 against published test data, clipping, PSNR cap."""

from __future__ import annotations

import numpy as np
import pytest

from restorekit.core.metrics import PSNR_CAP_DB, ciede2000, delta_e00, new_clipped, psnr


@pytest.mark.parametrize("lab1, lab2, expected", [
    # pairs 1, 7 and 17 of Sharma, Wu & Dalal (2005), Table 1
    ((50.0, 2.6772, -79.7751), (50.0, 0.0, -82.7485), 2.0425),
    ((50.0, 0.0, 0.0), (50.0, -1.0, 2.0), 2.3669),
    ((50.0, 2.5, 0.0), (73.0, 25.0, -18.0), 27.1492),
])
def test_ciede2000_matches_published_pairs(lab1, lab2, expected):
    assert ciede2000(np.array(lab1), np.array(lab2)) == pytest.approx(expected, abs=1e-4)
    assert ciede2000(np.array(lab2), np.array(lab1)) == pytest.approx(expected, abs=1e-4)  # symmetric


def test_delta_e00_of_rgb_images():
    rng = np.random.default_rng(0)
    a = rng.random((16, 16, 3), dtype=np.float32)
    assert delta_e00(a, a) == pytest.approx(0.0, abs=1e-6)
    assert 0 < delta_e00(a, np.clip(a + 0.02, 0, 1)) < delta_e00(a, np.clip(a + 0.1, 0, 1))


def test_new_clipped_counts_only_clipping_the_reference_does_not_have():
    ref = np.full((4, 4, 3), 0.5, np.float32)
    ref[0, 0] = 1.0  # the reference itself clips this pixel
    out = ref.copy()
    out[0, 0] = 1.0
    out[1, 1, 2] = 1.0  # a new blown highlight (one channel is enough)
    out[2, 2] = 0.0  # a new crushed black
    assert new_clipped(out, ref) == 2
    out[3, 3] = np.nan  # non-finite is not counted as clipped
    assert new_clipped(out, ref) == 2


def test_psnr_caps_identical_images():
    a = np.zeros((8, 8, 3), np.float32)
    assert psnr(a, a) == PSNR_CAP_DB
    assert psnr(a, a + 0.1) == pytest.approx(20.0)
