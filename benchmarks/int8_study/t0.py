import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
imgs = eval_images()
print([x.shape for x in imgs])
t=time.time(); ref = ref_outputs(imgs); print("ref", time.time()-t)
t=time.time(); tiles = calib_tiles(64); 
qstatic(str(OUT / "m_base.onnx"), tiles); print("quant", time.time()-t)
t=time.time(); m, w, p = evaluate(str(OUT / "m_base.onnx")); print("eval", time.time()-t)
print(graph_stats(str(OUT / "m_base.onnx")))
log(dict(recipe="baseline MinMax uint8/int8 per-ch, 64 tiles", mean=m, worst=w, per=p))
m2, w2, p2 = evaluate(str(OUT / "m_base.onnx"), opt=False)
log(dict(recipe="baseline MinMax (ORT opt disabled = float simulation of QDQ)", mean=m2, worst=w2))
