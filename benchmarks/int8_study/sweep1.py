import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import logging; logging.disable(logging.WARNING)
tiles = calib_tiles(32)
M = q.CalibrationMethod
R = [
 ("Percentile 99.99", dict(method=M.Percentile, extra={"CalibPercentile": 99.99})),
 ("Percentile 99.999", dict(method=M.Percentile, extra={"CalibPercentile": 99.999})),
 ("MinMax + CalibMovingAverage", dict(extra={"CalibMovingAverage": True})),
 ("MinMax, no Conv output QDQ (TRT-style: QDQ only on conv inputs)", dict(extra={"OpTypesToExcludeOutputQuantization": ["Conv"]})),
 ("Percentile 99.999, no Conv output QDQ", dict(method=M.Percentile, extra={"CalibPercentile": 99.999, "OpTypesToExcludeOutputQuantization": ["Conv"]})),
 ("Percentile 99.99, no Conv output QDQ", dict(method=M.Percentile, extra={"CalibPercentile": 99.99, "OpTypesToExcludeOutputQuantization": ["Conv"]})),
 ("Entropy", dict(method=M.Entropy)),
 ("MinMax int8 symmetric act (QInt8, ActivationSymmetric)", dict(act=q.QuantType.QInt8, extra={"ActivationSymmetric": True})),
]
for name, kw in R:
    t = time.time()
    try:
        p = qstatic(str(OUT / "w.onnx"), tiles, **kw)
        m, w, _ = evaluate(p); _, fl = graph_stats(p)
        log(dict(exp="sweep1", recipe=name + " (32 tiles)", mean=m, worst=w, float_ops=fl, t=time.time() - t))
    except Exception as e:
        log(dict(exp="sweep1", recipe=name, error=repr(e)[:300]))
