import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from gptq import *
from equalize import equalize
import logging; logging.disable(logging.WARNING)
tiles = calib_tiles(32)
U16 = q.QuantType.QUInt16
def ov(names): return {"TensorQuantOverrides": {n: [{"quant_type": U16}] for n in names}}
g = str(OUT / "gptq.onnx")
pre = lambda ks: [("prelu" if k == 0 else f"prelu_{k}") for k in ks]
cv = lambda ks: [("conv2d" if k == 0 else f"conv2d_{k}") for k in ks]
R = [
 ("gptq + a16 on prelu outs of layers 12-15", g, ov(pre([12, 13, 14, 15]))),
 ("gptq + a16 on prelu outs 0-2,12-15", g, ov(pre([0, 1, 2, 12, 13, 14, 15]))),
 ("gptq + a16 on all 17 prelu outs (conv inputs), conv outs 8-bit", g, ov(pre(range(17)))),
 ("gptq + a16 on all 18 conv outs, prelu outs 8-bit", g, ov(cv(range(18)))),
]
for name, src, extra in R:
    try:
        p = qstatic(str(OUT / "mix.onnx"), tiles, src=src, extra=extra)
        m, w, _ = evaluate(p); _, fl = graph_stats(p)
        log(dict(exp="mix", recipe=name + " MinMax", mean=m, worst=w, float_ops=fl))
    except Exception as e:
        log(dict(exp="mix", recipe=name, error=repr(e)[:300]))
e = equalize(FP32, str(OUT / "eq.onnx"), tiles[:16], 0.5)
p = gptq(e, str(OUT / "eq_gptq.onnx"), tiles[:8])
for meth, extra in [(q.CalibrationMethod.MinMax, {}), (q.CalibrationMethod.Percentile, {"CalibPercentile": 99.999})]:
    qq = qstatic(str(OUT / "eqg_q.onnx"), tiles, src=p, method=meth, extra=extra)
    m, w, _ = evaluate(qq); log(dict(exp="eq+gptq", recipe=f"equalize0.5 + gptq + w8a8 {meth.name} {extra}", mean=m, worst=w))
