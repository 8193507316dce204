import os as _os
from pathlib import Path as _Path

ROOT = _Path(__file__).resolve().parents[2]
SHARED = ROOT.parent / "shared"
OUT = _Path(_os.environ.get("INT8_STUDY_OUT", "/tmp/int8_study"))
OUT.mkdir(parents=True, exist_ok=True)

from common import *
import torch; torch.set_num_threads(1)
from restorekit.models.loader import load_model
lm = load_model(str(SHARED / "weights/realesr-animevideov3.pth")); net = lm.module.eval()
tiles = calib_tiles(32)
x = torch.from_numpy(np.concatenate(tiles[:16]))
acts = []
with torch.no_grad():
    h = x
    for i, l in enumerate(net.body):
        h = l(h)
        acts.append(h.clone())
for i, a in enumerate(acts):
    lo = a.amin(dim=(0, 2, 3)); hi = a.amax(dim=(0, 2, 3))
    rng = (hi - lo)
    p999 = torch.quantile(a.transpose(0,1).reshape(a.shape[1], -1)[:, ::7].abs(), 0.9999, dim=1)
    print(i, type(net.body[i]).__name__, f"tensor [{a.min():.2f},{a.max():.2f}] std {a.std():.3f} chan range med {rng.median():.2f} min {rng.min():.3f} max {rng.max():.2f}; |x|p99.99 overall {torch.quantile(a.flatten()[::13].abs(),0.9999):.2f}")
w = [l for l in net.body if isinstance(l, torch.nn.PReLU)]
print("prelu slopes", [f"{p.weight.min():.2f}/{p.weight.max():.2f}" for p in w])
