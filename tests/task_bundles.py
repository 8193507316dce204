"""What the colorization and inpainting tests share (tests/test_colorize.py, tests/test_inpaint.py):
a checkpoint laid out like the official one converted by `restorekit convert`, the refusal of a
bundle given to the wrong stage, and `eval` feeding the task its input."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from restorekit.cli.main import app
from tests.conftest import SAMPLES, SHARED, need_shared

runner = CliRunner()
TILE = 64


def convert_checkpoint(path: Path, out: Path, target: str = "onnx") -> Path:
    """``restorekit convert PATH --target TARGET --tile 64``: the bundle directory."""
    res = runner.invoke(app, ["convert", str(path), "--target", target, "--tile", str(TILE), "--out", str(out),
                              "--eval-images", str(SAMPLES)])
    assert res.exit_code == 0, res.output
    return out / path.stem / f"{target}-fp32"


def assert_wrong_task_refused(tmp_path: Path, option: str, bundle: Path, task: str, needs: str) -> None:
    """``restore --OPTION BUNDLE`` (a ``task`` bundle where a ``needs`` model goes): exit 2, one line, no output."""
    args = ["restore", str(SAMPLES / "camera.png"), "-o", str(tmp_path / "x.png"), option, str(bundle)]
    if option == "--face-model":  # the face model is loaded only with a face detector
        args += ["--face-detector", str(need_shared(SHARED / "weights" / "retinaface_mobilenet0.25.pth"))]
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    article = "an" if needs[0] in "aeiou" else "a"
    assert f"{task} bundle; this stage needs {article} {needs} model" in res.output
    assert not (tmp_path / "x.png").exists()


def assert_eval_feeds_the_task(tmp_path: Path, bundle: Path, task: str) -> None:
    """`restorekit eval` of a task bundle gives the network its task's input (gray photo, masked photo)."""
    out = tmp_path / f"{task}.json"
    res = runner.invoke(app, ["eval", str(bundle), "--images", str(SAMPLES), "--count", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads(out.read_text())
    assert data["bundle"]["task"] == task and data["summary"]["psnr_db_mean"] >= 60
