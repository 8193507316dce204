"""Conversion coverage: every registered architecture x target at fp32, validated against PyTorch.

    python scripts/coverage.py [--only NAME ...] [--targets onnx,tflite,coreml] [--config auto|small|published]
                               [--timeout 300] [--jobs 1] [--out docs/coverage.md]

Each conversion runs in its own subprocess with a timeout. ONNX and TFLite files are run (restorekit
sessions) on a real photo crop and compared with PyTorch (PSNR, or max abs error for detectors);
Core ML is checked structurally (it cannot predict on Linux).
"""

from __future__ import annotations

import argparse
import os
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIN_DB, MAX_ABS = 60.0, 1e-3


def sample_input(arch, spec, size: int):
    """A real photo crop (a face photo for face models), NCHW float32 in [0, 1]."""
    import cv2
    import numpy as np

    face = arch.task in ("face", "detect")
    src = sorted((ROOT.parent / "shared/photos/faces").glob("*.png"))[0] if face else ROOT / "sample_images/astronaut.png"
    img = cv2.cvtColor(cv2.imread(str(src)), cv2.COLOR_BGR2RGB).astype(np.float32) / 255.0
    if face:
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    else:
        h, w = img.shape[:2]
        img = img[h // 4: h // 4 + size, w // 3: w // 3 + size]
    if arch.task == "colorize":
        img = np.repeat(img.mean(axis=2, keepdims=True), 3, axis=2)
    x = img.transpose(2, 0, 1)[None]
    if spec.in_channels == 4:
        mask = np.zeros((1, 1, size, size), np.float32)
        mask[..., size // 4: size // 2, size // 4: size // 2] = 1.0
        x = np.concatenate([x, mask], axis=1)
    return np.ascontiguousarray(x, dtype=np.float32)


def input_size(arch, spec) -> int:
    if spec.fixed_size:
        return spec.fixed_size
    m = max(spec.multiple_of, 8)
    return max(64, -(-64 // m) * m)


def check(name: str, target: str, small: bool, workdir: Path) -> dict:
    """Build, convert and validate one (architecture, target). Raises on conversion failure."""
    import numpy as np
    import torch

    from restorekit.build.convert import convert_model
    from restorekit.core.metrics import psnr
    from restorekit.models.arches import ARCHES

    torch.manual_seed(0)
    arch = ARCHES[name]
    model, spec = arch.build(small), arch.spec(small)
    size = input_size(arch, spec)
    x = sample_input(arch, spec, size)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)).float().numpy()
    t0 = time.time()
    conv = convert_model(model, spec, target, workdir, precision="fp32", tile=size)
    res = {"convert_s": round(time.time() - t0, 1), "params": sum(p.numel() for p in model.parameters())}
    p = Path(conv.path)
    res["size_mb"] = (sum(f.stat().st_size for f in p.rglob("*") if f.is_file()) if p.is_dir() else p.stat().st_size) / 1e6
    if target == "coreml":
        import coremltools as ct

        mspec = ct.models.MLModel(str(p), skip_model_load=True).get_spec()
        ops = sum(len(fn.block_specializations[fn.opset].operations) for fn in mspec.mlProgram.functions.values())
        res.update(ok=mspec.WhichOneof("Type") == "mlProgram" and ops > 0, metric=f"{ops} MIL ops (structural)")
        return res
    from restorekit.runtime.onnx import OnnxSession
    from restorekit.runtime.tflite import TFLiteSession

    try:
        sess = (OnnxSession if target == "onnx" else TFLiteSession)(p, conv.input, conv.output)
        out = sess.run(x)
    except Exception as exc:
        res.update(ok=False, run_error=(str(exc).strip().splitlines() or [type(exc).__name__])[0][:200])
        return res
    if spec.task == "detect":
        err = float(np.abs(out - ref).max())
        res.update(ok=err <= MAX_ABS, metric=f"max abs {err:.1e}")
    else:
        db = psnr(out, ref, peak=max(1.0, float(np.abs(ref).max())))  # randomly initialised nets can leave [0, 1]
        res.update(ok=bool(db >= MIN_DB), metric=f"{db:.1f} dB", psnr=db)
    return res


def worker(name: str, target: str, small: bool) -> None:
    """Subprocess entry: prints one JSON line (status ok|bad|fail)."""
    from restorekit.convert import ConversionError

    with tempfile.TemporaryDirectory() as tmp:
        try:
            res = check(name, target, small, Path(tmp))
            res["status"] = "ok" if res["ok"] else "bad"
        except ConversionError as exc:
            res = {"status": "fail", "reason": str(exc).splitlines()[0][:300]}
        except Exception as exc:  # building / running PyTorch itself failed
            res = {"status": "error", "reason": f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:250]}"}
    print("COVERAGE " + json.dumps(res), flush=True)


def run_one(name: str, target: str, small: bool, timeout: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", name, target, "small" if small else "published"]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "fail", "reason": f"timed out after {timeout} s"}
    line = next((ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("COVERAGE ")), None)
    if line is None:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"status": "error", "reason": f"worker died (rc {proc.returncode}): {tail[:200]}"}
    return json.loads(line[len("COVERAGE "):])


def cell(res: dict, path: str) -> str:
    if res["status"] == "ok":
        return f"✓ {res['metric']}, {res['size_mb']:.2f} MB"
    if res["status"] == "bad":
        why = res.get("run_error") or f"{res.get('metric', '?')} < {MIN_DB:g} dB"
        return f"✗ converts ({res['size_mb']:.2f} MB) but {why} — {path or 'investigate'}"
    reason = res["reason"].replace("|", "\\|")
    return f"✗ {reason} — {path or 'investigate'}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="architecture names (default: all)")
    ap.add_argument("--targets", default="onnx,tflite,coreml")
    ap.add_argument("--config", choices=("auto", "small", "published"), default="auto",
                    help="auto: published where it converts in reasonable time on 2 cores, else small")
    ap.add_argument("--timeout", type=int, default=300)
    ap.add_argument("--jobs", type=int, default=1, help="conversions run in parallel")
    ap.add_argument("--out", default=str(ROOT / "docs/coverage.md"))
    ap.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args.worker[0], args.worker[1], args.worker[2] == "small")

    import coremltools
    import litert_torch
    import onnxruntime
    import torch

    from restorekit.models.arches import ARCHES

    names = args.only or list(ARCHES)
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    plan = {n: args.config == "small" or (args.config == "auto" and not ARCHES[n].published_fast) for n in names}

    def job(nt):
        t0 = time.time()
        res = run_one(nt[0], nt[1], plan[nt[0]], args.timeout)
        print(f"{nt[0]:22s} {nt[1]:7s} {res['status']:6s} {time.time() - t0:6.1f}s  "
              f"{res.get('metric') or res.get('run_error') or res.get('reason')}", flush=True)
        return nt, res

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = dict(pool.map(job, [(n, t) for n in names for t in targets]))
    rows, n_both = [], 0
    for name in names:
        arch = ARCHES[name]
        config = "real weights" if arch.real_weights else ("small" if plan[name] else "published")
        cells = {t: cell(results[name, t], arch.path) for t in targets}
        n_both += all(results[name, t]["status"] == "ok" for t in ("onnx", "tflite") if t in targets)
        rows.append((name, config, arch, cells))
    cmd = "python scripts/coverage.py " + " ".join(sys.argv[1:])
    lines = [
        "# Conversion coverage (fp32)", "",
        f"- Command: `{cmd.strip()}`",
        f"- Date: {__import__('datetime').date.today()}; machine: Linux x86-64, {os.cpu_count()} CPU cores (shared), no GPU",
        f"- Versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"litert-torch {getattr(litert_torch, '__version__', '?')}, coremltools {coremltools.__version__}",
        f"- Validation: ONNX / TFLite files run on a real photo crop (a face photo for face models) and compared "
        f"with PyTorch: ✓ means PSNR >= {MIN_DB:g} dB (peak = max(1, max |PyTorch output|), since randomly initialised "
        f"nets such as DDColor output far outside [0, 1]) (max abs error <= {MAX_ABS:g} for the detector). Core ML cannot "
        "predict on Linux: ✓ there means converted + ML program with its MIL op count (structural only).",
        "- Config: `published` = the published configuration; `small` = a reduced configuration of the same "
        "architecture (fewer blocks/channels, randomly initialised); `real weights` = a real checkpoint.", "",
        "| architecture | task | config | " + " | ".join(targets) + " |",
        "|---|---|---|" + "---|" * len(targets),
    ]
    for name, config, arch, cells in rows:
        lines.append(f"| {name} | {arch.task} | {config} | " + " | ".join(cells[t] for t in targets) + " |")
    lines += ["", f"**Summary:** {n_both} of {len(rows)} architectures convert to "
              f"{' and '.join(t for t in ('ONNX', 'TFLite') if t.lower() in targets)} at >= {MIN_DB:g} dB "
              f"(detector: max abs <= {MAX_ABS:g})."]
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
