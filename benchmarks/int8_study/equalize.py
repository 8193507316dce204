"""Activation/weight range equalization across Conv -> PReLU -> Conv (PReLU is positively homogeneous:
PReLU(x/s) = PReLU(x)/s for s > 0), applied to the fp32 ONNX initializers. fp32 function unchanged."""
import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import torch
from onnx import numpy_helper as nh

def act_ranges(tiles, q=None):
    torch.set_num_threads(1)
    from restorekit.models.loader import load_model
    net = load_model(str(SHARED / "weights/realesr-animevideov3.pth")).module.eval()
    x = torch.from_numpy(np.concatenate(tiles))
    r = {}
    with torch.no_grad():
        h = x
        for i, l in enumerate(net.body):
            h = l(h)
            if isinstance(l, torch.nn.Conv2d):
                # conv output and prelu output both scale with s; take |conv out| per channel (prelu out <= max(|slope|,1)*that)
                a = h.abs().transpose(0, 1).reshape(h.shape[1], -1)
                r[i] = (a.amax(1) if q is None else torch.quantile(a[:, ::3], q, dim=1)).numpy()
    return r

def equalize(src, dst, tiles, alpha=0.5, q=None, iters=1):
    m = onnx.load(src)
    init = {t.name: t for t in m.graph.initializer}
    W = {k: nh.to_array(init[f"body.{k}.weight"]).copy() for k in range(0, 35, 2)}
    B = {k: nh.to_array(init[f"body.{k}.bias"]).copy() for k in range(0, 35, 2)}
    r = act_ranges(tiles, q)
    for k in range(0, 33, 2):
        a = r[k]
        w = np.abs(W[k + 2]).max(axis=(0, 2, 3))
        s = (a ** alpha) / (w ** (1 - alpha))
        s = s / np.exp(np.mean(np.log(s)))   # keep geometric mean 1 (scale-free)
        # conv_k output channel c divided by s_c; next conv input channel c multiplied by s_c
        W[k] /= s[:, None, None, None]; B[k] /= s
        W[k + 2] *= s[None, :, None, None]
    for k in W:
        init[f"body.{k}.weight"].CopyFrom(nh.from_array(W[k].astype(np.float32), f"body.{k}.weight"))
        init[f"body.{k}.bias"].CopyFrom(nh.from_array(B[k].astype(np.float32), f"body.{k}.bias"))
    onnx.save(m, dst)
    return dst
