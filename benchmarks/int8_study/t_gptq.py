import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from gptq import *
import logging; logging.disable(logging.WARNING)
import sys
tiles = calib_tiles(32)
src = sys.argv[1] if len(sys.argv) > 1 else FP32
p = gptq(src, str(OUT / "gptq.onnx"), tiles[:8])
m, w, _ = evaluate(p); log(dict(exp="gptq", recipe=f"gptq weights fp32 (weights-only error) src={src}", mean=m, worst=w))
qq = qstatic(str(OUT / "gptq_a16.onnx"), tiles, src=p, act=q.QuantType.QUInt16)
m, w, _ = evaluate(qq); log(dict(exp="gptq", recipe=f"gptq + w8a16 MinMax src={src}", mean=m, worst=w))
for meth, extra in [(q.CalibrationMethod.MinMax, {}), (q.CalibrationMethod.Percentile, {"CalibPercentile": 99.999})]:
    qq = qstatic(str(OUT / "gptq_q.onnx"), tiles, src=p, method=meth, extra=extra)
    m, w, _ = evaluate(qq); log(dict(exp="gptq", recipe=f"gptq + w8a8 {meth.name} {extra} src={src}", mean=m, worst=w))
