"""Memory that grows with the tile, not the photo: `restorekit run` measured in a subprocess."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest

from restorekit.eval.bench_worker import run_cli_peak


def _peak_rss_mb(*args: str) -> float:
    """Peak resident memory (MB) of ``restorekit ARGS`` alone (VmHWM since exec: the forking test
    process's own memory is not counted, as ``ru_maxrss`` would)."""
    code, _, peak, err = run_cli_peak(list(args))
    assert code == 0, err
    return peak


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KB on Linux only")
def test_run_holds_the_photo_and_output_as_samples_not_float(edge_bundles, tmp_path, rgb_photo):
    """The extra memory of a 1600x1200 photo over a 400x300 crop of it (both run in tiles of at most 256, so
    the model's own buffers are the same) stays within twice its uint8 x2 output plus 40 MB: photo
    and output are kept as 8-bit samples and tiles are blended a band at a time (measured: 52 MB).
    Float copies of input and output (the former path) took 280 MB more."""
    bundle = edge_bundles / "onnx-int8"
    big = cv2.resize((rgb_photo[:, :, ::-1] * 255).astype(np.uint8), (1600, 1200), interpolation=cv2.INTER_CUBIC)
    cv2.imwrite(str(tmp_path / "big.jpg"), big)
    cv2.imwrite(str(tmp_path / "small.jpg"), big[:300, :400])
    tiles = ["--tile", "256"]  # the same tile size for both (the plan would run the crop whole)
    small = _peak_rss_mb("run", str(bundle), str(tmp_path / "small.jpg"), "-o", str(tmp_path / "s.jpg"), *tiles)
    large = _peak_rss_mb("run", str(bundle), str(tmp_path / "big.jpg"), "-o", str(tmp_path / "b.jpg"), *tiles)
    out_mb = 3200 * 2400 * 3 / 2**20
    assert cv2.imread(str(tmp_path / "b.jpg")).shape == (2400, 3200, 3)
    assert large - small <= 2 * out_mb + 40, f"peak RSS {large:.0f} MB for 1600x1200 vs {small:.0f} MB for 400x300"
