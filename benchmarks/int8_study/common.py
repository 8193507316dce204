import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

import os
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np, onnx, onnxruntime as ort, glob, json, time
from collections import Counter
from onnxruntime import quantization as q
from restorekit.runtime.image import read_image
from restorekit.quantize.calibration import calibration_tiles

FP32 = str(OUT / "fp32.onnx")

def calib_tiles(n=64, tile=128, seed=0):
    a = calibration_tiles(str(ROOT / "sample_images"), tile, n // 2, seed)
    b = calibration_tiles(str(SHARED / "photos/old"), tile, n - n // 2, seed + 1)
    return a + b

def _box2(img):
    h, w = img.shape[0] // 2 * 2, img.shape[1] // 2 * 2
    i = img[:h, :w]
    return 0.25 * (i[0::2, 0::2] + i[1::2, 0::2] + i[0::2, 1::2] + i[1::2, 1::2])

EVAL_FILES = (sorted(glob.glob(str(SHARED / "photos/bw/*")))[:4]
              + sorted(glob.glob(str(SHARED / "photos/faces/*")))[:3]
              + sorted(glob.glob(str(SHARED / "photos/whole/*")))[2:3] + sorted(glob.glob(str(SHARED / "photos/whole/*")))[4:6])

def eval_images(crop=128):
    out = []
    for f in EVAL_FILES:
        img = read_image(f).rgb.astype(np.float32)
        if min(img.shape[:2]) >= 500:
            img = _box2(img)
        h, w = img.shape[:2]
        y, x = (h - crop) // 2, (w - crop) // 2
        c = img[y:y + crop, x:x + crop]
        out.append(np.ascontiguousarray(c.transpose(2, 0, 1)[None], dtype=np.float32))
    return out

def session(path, opt=True, dump=None):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL if opt else ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if dump:
        so.optimized_model_filepath = dump
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])

def run(path, imgs, opt=True, dump=None):
    s = session(path, opt, dump)
    n = s.get_inputs()[0].name
    return [s.run(None, {n: x})[0] for x in imgs]

_REF = {}
def ref_outputs(imgs, key="eval"):
    if key not in _REF:
        fn = f"{OUT}/ref_{key}.npz"
        if os.path.exists(fn):
            d = np.load(fn); _REF[key] = [d[str(i)] for i in range(len(d.files))]
        else:
            _REF[key] = run(FP32, imgs)
            np.savez(fn, **{str(i): o for i, o in enumerate(_REF[key])})
    return _REF[key]

def psnr(a, b):
    a = np.clip(a, 0, 1); b = np.clip(b, 0, 1)
    mse = float(np.mean((a.astype(np.float64) - b) ** 2))
    return 10 * np.log10(1.0 / max(mse, 1e-20))

def evaluate(path, imgs=None, opt=True):
    imgs = imgs or eval_images()
    ref = ref_outputs(imgs)
    outs = run(path, imgs, opt=opt)
    p = [psnr(o, r) for o, r in zip(outs, ref)]
    return float(np.mean(p)), float(np.min(p)), p

def graph_stats(path):
    """Op histogram of the ORT-optimized graph: which ops are int8 (QLinear*) vs float."""
    dump = path.replace(".onnx", ".opt.onnx")
    session(path, True, dump)
    m = onnx.load(dump)
    c = Counter(n.op_type for n in m.graph.node)
    float_compute = {k: v for k, v in c.items() if k not in ("QuantizeLinear", "DequantizeLinear") and not k.startswith("QLinear") and k not in ("DynamicQuantizeLinear",)}
    return dict(c), float_compute

class Reader(q.CalibrationDataReader):
    def __init__(self, tiles, name="input"):
        self.tiles = tiles; self.name = name; self.i = 0
    def get_next(self):
        if self.i >= len(self.tiles): return None
        self.i += 1
        return {self.name: self.tiles[self.i - 1]}
    def rewind(self): self.i = 0

def qstatic(out, tiles, src=FP32, method=q.CalibrationMethod.MinMax, per_channel=True,
            act=q.QuantType.QUInt8, wt=q.QuantType.QInt8, extra=None, exclude=None, op_types=None):
    q.quantize_static(src, out, Reader(tiles), quant_format=q.QuantFormat.QDQ, per_channel=per_channel,
                      activation_type=act, weight_type=wt, calibrate_method=method,
                      extra_options=extra or {}, nodes_to_exclude=exclude or [], op_types_to_quantize=op_types)
    return out

def log(row, fn=str(OUT / "results.jsonl")):
    with open(fn, "a") as f: f.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)
