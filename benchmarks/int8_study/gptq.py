"""GPTQ-style Hessian-aware rounding of the int8 per-channel conv weights, written back as fp32 values that lie
exactly on ORT's symmetric per-channel int8 grid (scale = max|w_row|/127), so quantize_static reproduces them."""
from common import *
import torch, torch.nn.functional as F
from onnx import numpy_helper as nh

def load_params(m):
    init = {t.name: nh.to_array(t) for t in m.graph.initializer}
    W = [torch.from_numpy(init[f"body.{k}.weight"].copy()) for k in range(0, 35, 2)]
    B = [torch.from_numpy(init[f"body.{k}.bias"].copy()) for k in range(0, 35, 2)]
    slopes = []
    for n in m.graph.node:
        if n.op_type == "PRelu":
            slopes.append(torch.from_numpy(init[n.input[1]].copy()).reshape(-1))
    return W, B, slopes

def gptq(src, dst, tiles, damp=0.01, act_order=True, sequential=False):
    torch.set_num_threads(1)
    m = onnx.load(src)
    W, B, S = load_params(m)
    Wq = []
    xs = [torch.from_numpy(t) for t in tiles]
    hs = xs
    for k in range(18):
        w = W[k]; cout = w.shape[0]
        d = w[0].numel()
        H = torch.zeros(d, d, dtype=torch.float64); n = 0
        for h in hs:
            u = F.unfold(h, 3, padding=1)[0].double()  # (d, HW)
            H += u @ u.T; n += u.shape[1]
        H /= n
        Wm = w.reshape(cout, -1).double().clone()
        scale = Wm.abs().amax(1) / 127.0
        dead = torch.diag(H) == 0
        H[dead, dead] = 1
        perm = torch.argsort(torch.diag(H), descending=True) if act_order else torch.arange(d)
        Wm = Wm[:, perm]; Hp = H[perm][:, perm]
        Hp += damp * torch.mean(torch.diag(Hp)) * torch.eye(d, dtype=torch.float64)
        Hinv = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(Hp)), upper=True)
        Q = torch.zeros_like(Wm)
        for i in range(d):
            col = Wm[:, i]
            qv = torch.clamp(torch.round(col / scale), -127, 127) * scale
            Q[:, i] = qv
            err = (col - qv) / Hinv[i, i]
            Wm[:, i + 1:] -= err[:, None] * Hinv[i, i + 1:][None, :]
        Q = Q[:, torch.argsort(perm)]
        # keep the row max on the grid edge so ORT recomputes the same scale
        qi = torch.round(Q / scale[:, None])
        bad = (qi.abs().amax(1) < 127).sum().item()
        Wq.append(Q.reshape(w.shape).float())
        # next-layer inputs: float model (sequential=False) or with GPTQ weights so far (sequential=True)
        wk = Wq[-1] if sequential else w
        if k < 17:
            hs = [F.prelu(F.conv2d(h, wk, B[k], padding=1), S[k]) for h in hs]
        print(f"layer {k}: rows whose max left the grid edge: {bad}", flush=True)
    init = {t.name: t for t in m.graph.initializer}
    for j, k in enumerate(range(0, 35, 2)):
        init[f"body.{k}.weight"].CopyFrom(nh.from_array(Wq[j].numpy(), f"body.{k}.weight"))
    onnx.save(m, dst)
    return dst
