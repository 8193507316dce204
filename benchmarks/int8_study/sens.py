import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import logging; logging.disable(logging.WARNING)
tiles = calib_tiles(32)
convs = ["node_conv2d"] + [f"node_conv2d_{i}" for i in range(1, 18)]
others = ["node_add_156", "node_upsample_nearest2d", "node_pixel_shuffle"]
m, w, _ = evaluate(qstatic(str(OUT / "s.onnx"), tiles)); log(dict(exp="sens", recipe="all (32 tiles minmax)", mean=m, worst=w))
for i, c in enumerate(convs):
    m, w, _ = evaluate(qstatic(str(OUT / "s.onnx"), tiles, exclude=[x for x in convs if x != c] + others))
    log(dict(exp="sens_only", layer=i, recipe=f"only conv{i} quantized", mean=m, worst=w))
m, w, _ = evaluate(qstatic(str(OUT / "s.onnx"), tiles, exclude=convs)); log(dict(exp="sens_only", layer="add/resize", recipe="only add+resize quantized", mean=m, worst=w))
for i, c in enumerate(convs):
    m, w, _ = evaluate(qstatic(str(OUT / "s.onnx"), tiles, exclude=[c]))
    log(dict(exp="sens_allbut", layer=i, recipe=f"all but conv{i}", mean=m, worst=w))
