import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from equalize import *
import logging; logging.disable(logging.WARNING)
import sys
tiles = calib_tiles(32)
for alpha in [0.5]:
    p = equalize(FP32, f"{OUT}/eq{alpha}.onnx", tiles[:16], alpha)
    m, w, _ = evaluate(p); print("fp32-equalized vs fp32", m, w)
    for meth, extra in [(q.CalibrationMethod.MinMax, {}), (q.CalibrationMethod.Percentile, {"CalibPercentile": 99.999})]:
        qq = qstatic(str(OUT / "eqq.onnx"), tiles, src=p, method=meth, extra=extra)
        m, w, _ = evaluate(qq)
        log(dict(exp="eq", recipe=f"equalize alpha={alpha} (act max) + {meth.name} {extra}", mean=m, worst=w))
