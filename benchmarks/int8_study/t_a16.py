import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import logging; logging.disable(logging.WARNING)
tiles = calib_tiles(32)
p = qstatic(str(OUT / "a16.onnx"), tiles, act=q.QuantType.QUInt16)
m, w, _ = evaluate(p); log(dict(exp="a16", recipe="w8a16 (QUInt16 all activations) MinMax = weight-error floor", mean=m, worst=w))
