import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import logging; logging.disable(logging.WARNING)
import nncf, sys
from nncf.quantization.advanced_parameters import AdvancedQuantizationParameters, AdvancedBiasCorrectionParameters
n_tiles = int(sys.argv[1]) if len(sys.argv) > 1 else 32
tiles = calib_tiles(n_tiles)
src = sys.argv[2] if len(sys.argv) > 2 else FP32
model = onnx.load(src)
ds = nncf.Dataset(tiles, lambda t: {"input": t})
for name, kw in [
    ("nncf MIXED, fast_bias_correction=False (full BC)", dict(preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=False)),
    ("nncf MIXED, fast BC", dict(preset=nncf.QuantizationPreset.MIXED, fast_bias_correction=True)),
    ("nncf MIXED, no BC", dict(preset=nncf.QuantizationPreset.MIXED, advanced_parameters=AdvancedQuantizationParameters(disable_bias_correction=True))),
]:
    t = time.time()
    try:
        qm = nncf.quantize(model, ds, subset_size=len(tiles), **kw)
        p = str(OUT / "nncf.onnx"); onnx.save(qm, p)
        m, w, _ = evaluate(p); full, fl = graph_stats(p)
        log(dict(exp="nncf", recipe=f"{name} src={os.path.basename(src)} ({n_tiles} tiles)", mean=m, worst=w, ops=full, t=time.time() - t))
    except Exception as e:
        import traceback; traceback.print_exc()
        log(dict(exp="nncf", recipe=name, error=repr(e)[:300]))
