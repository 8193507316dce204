#!/usr/bin/env python
"""QAT experiment: equalize + GPTQ + quantization-aware fine-tuning (restorekit.quantize.finetune),
then ORT QDQ w8a8 with the learned activation ranges; PSNR vs the original fp32 model on the
10 held-out crops of common.py. Usage: .venv/bin/python benchmarks/int8_study/t_qat.py STEPS [LR]"""
import sys, time
from pathlib import Path
from common import *  # noqa: F401,F403  (harness of this study)
import torch
from restorekit.models.loader import load_model
from restorekit.convert.onnx import export_fp32
from restorekit.quantize.prepare import prepare_for_int8
from restorekit.quantize.finetune import quantization_finetune
from restorekit.quantize.onnx import node_layers
from restorekit.quantize.recipe import quantizable_layers

torch.set_num_threads(2)
steps = int(sys.argv[1]); lr = float(sys.argv[2]) if len(sys.argv) > 2 else 2e-5
crop = int(sys.argv[3]) if len(sys.argv) > 3 else 64
range_lr = float(sys.argv[4]) if len(sys.argv) > 4 else 1e-2
ntiles = int(sys.argv[5]) if len(sys.argv) > 5 else 32
loaded = load_model(str(SHARED / "weights/realesr-animevideov3.pth"))
orig = loaded.module.eval()
tiles = calib_tiles(ntiles, 128)
imgs = eval_images()
with torch.no_grad():
    ref = [orig(torch.from_numpy(x)).numpy() for x in imgs]
prep, info = prepare_for_int8(orig, tiles)
t0 = time.time()
res = quantization_finetune(prep, orig, tiles, steps=steps, lr=lr, crop=crop, range_lr=range_lr,
                            progress=lambda s, l: print(s, round(-10*np.log10(l), 2), flush=True) if s % 25 == 0 else None)
with torch.no_grad(), res.simulation as fq:
    p = [psnr(fq(torch.from_numpy(x)).numpy(), r) for x, r in zip(imgs, ref)]
print("pytorch fake-quant held-out", np.mean(p), np.min(p), [round(v, 1) for v in p], flush=True)
print("train s", round(time.time() - t0), res.report, flush=True)
fp = str(OUT / f"qat_{steps}.onnx"); qp = str(OUT / f"qat_{steps}_int8.onnx")
export_fp32(res.model, loaded.spec, Path(fp), 128)
m = onnx.load(fp)
layers = quantizable_layers(res.model)
mapping = node_layers(m, layers)
ov = {}
by = {n.name: n for n in m.graph.node}
for node, layer in mapping.items():
    nd = by[node]
    if layer in res.input_ranges:
        lo, hi = res.input_ranges[layer]; ov[nd.input[0]] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
    if layer in res.output_ranges:
        lo, hi = res.output_ranges[layer]; ov[nd.output[0]] = [{"rmin": np.float32(lo), "rmax": np.float32(hi)}]
print("overrides", len(ov), "of nodes", len(mapping))
for name, extra in (("learned", {"TensorQuantOverrides": ov}), ("minmax", {})):
    q.quantize_static(fp, qp, Reader(tiles), quant_format=q.QuantFormat.QDQ, per_channel=True,
                      activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                      calibrate_method=q.CalibrationMethod.MinMax, extra_options=extra)
    outs = run(qp, imgs)
    p = [psnr(o, r) for o, r in zip(outs, ref)]
    print([round(v, 1) for v in p]); log({"exp": "qat", "ranges": name, "steps": steps, "lr": lr, "crop": crop, "ntiles": ntiles, "mean": float(np.mean(p)), "worst": float(np.min(p)), **res.report})
# fake-quant model in PyTorch (no ORT) for comparison: float model output
with torch.no_grad():
    outs = [res.model(torch.from_numpy(x)).numpy() for x in imgs]
print("float finetuned vs orig", np.mean([psnr(o, r) for o, r in zip(outs, ref)]))
