"""Shared fixtures. Reference data lives in ../shared (never committed); tests that need it skip
with a reason when it is absent."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
SAMPLES = ROOT / "sample_images"
REALESR = SHARED / "weights" / "realesr-animevideov3.pth"


def need_shared(path: Path = SHARED) -> Path:
    """Skip the calling test when a ../shared file is not on this machine."""
    if not path.exists():
        pytest.skip(f"reference data not present: {path} (../shared is provided on CI and developer machines)")
    return path


@pytest.fixture(scope="session")
def builtin_bundles(tmp_path_factory) -> Path:
    """The main job, run once: `restorekit bundle --out DIR` on the built-in model (all 8 bundles)."""
    from typer.testing import CliRunner

    from restorekit.cli.main import app

    out = tmp_path_factory.mktemp("bundles")
    res = CliRunner().invoke(app, ["bundle", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return out / "restorekit-x2"


@pytest.fixture
def rgb_photo() -> np.ndarray:
    """A real photo (astronaut, public domain) as HxWx3 float32."""
    from restorekit.core.image import read_image

    return read_image(SAMPLES / "astronaut.png").rgb
