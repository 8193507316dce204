import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

import os; os.environ["OMP_NUM_THREADS"]="1"
import torch; torch.set_num_threads(1)
import numpy as np, onnx
from pathlib import Path
from restorekit.models.loader import load_model
from restorekit.convert.onnx import export_fp32
lm = load_model(str(SHARED / "weights/realesr-animevideov3.pth"))
print(lm.spec)
print(lm.module)
export_fp32(lm.module, lm.spec, Path(str(OUT / "fp32.onnx")), 128)
m = onnx.load(str(OUT / "fp32.onnx"))
for n in m.graph.node: print(n.op_type, n.name, list(n.input), list(n.output))
