"""Conversion coverage: every registered architecture x target at fp32, through the path a user takes.

    python scripts/coverage.py [--only NAME ...] [--targets onnx,tflite,coreml] [--config auto|small|published]
                               [--timeout 300] [--jobs 1] [--out docs/coverage.md]

For each architecture the registry net (``restorekit.models.arches``, randomly initialised) is saved
as a checkpoint laid out like the official one (``Arch.save_checkpoint``: the inner network's state
dict under the official wrapper key); real checkpoints are used as they are. Each (architecture,
target) cell then runs ``restorekit bundle FILE --targets T --precisions fp32 --tile S --out DIR
--eval-images PHOTOS`` in a subprocess with a timeout, so spandrel's detection, the loader's io
wrappers and the bundle's validation are all on the path, and reads the result from the bundle's
manifest.json: ONNX / TFLite fidelity against PyTorch on real photo crops (``fidelity_psnr_db``, or
the raw max abs error for the detector), Core ML's structural check (it cannot predict on Linux).

With ``--precisions`` beyond fp32 (e.g. ``fp32,fp16,w8;coreml=fp32,fp16,palettize6``: a default list, then
per-target lists), each cell bundles all of its target's precisions in one ``restorekit bundle`` call and
the page (``--out``, default docs/precisions.md) has one row per (architecture, target, precision): size
and its ratio to the same target's fp32 bundle, fidelity vs the fp32 PyTorch model (measured, or Core ML's
PyTorch simulation), output sanity, the layers fp16 safety kept in fp32, and the bundle's CPU latency p50
over PyTorch's measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
MIN_DB, MAX_ABS = 60.0, 1e-3
PRECISION = "fp32"
FACE_PHOTOS = ROOT.parent / "shared/photos/faces"
PHOTOS = ROOT / "sample_images"


def tile_size(spec) -> int:
    """The bundle tile of a registry spec: its fixed side, else 64 rounded up to its multiple."""
    if spec.fixed_size:
        return spec.fixed_size
    m = max(spec.multiple_of, 8)
    return max(64, -(-64 // m) * m)


def effective_small(arch, small: bool) -> bool:
    """Whether the small configuration is used: not where spandrel cannot detect it from its weights."""
    return small and arch.small_loadable


def save(name: str, small: bool, folder: Path) -> None:
    """Subprocess entry: build the registry net (seed 0), save it like the official checkpoint, print its path."""
    import torch

    from restorekit.models.arches import ARCHES

    torch.manual_seed(0)
    print("CHECKPOINT " + ARCHES[name].save_checkpoint(ARCHES[name].build(small), folder, small), flush=True)


def error_line(stderr: str, rc: int) -> str:
    """The one-line reason of a failed ``restorekit`` run: its ``error:`` line, else the traceback's last line."""
    lines = [ln.strip() for ln in stderr.splitlines() if ln.strip()]
    for ln in reversed(lines):
        if ln.startswith("error:"):
            return ln[len("error:"):].strip()
    for ln in reversed(lines):
        if not ln.startswith(("warning:", "File ", "^", "~")) and ("Error" in ln or "Exception" in ln):
            return ln
    return f"exit code {rc}: " + (lines[-1] if lines else "no output")


def parse_precisions(spec: str, targets: list[str]) -> dict[str, list[str]]:
    """``--precisions``: ``LIST`` or ``LIST;target=LIST;...`` -> target -> its precisions (those it supports)."""
    from restorekit.core.targets import PRECISIONS, TARGETS

    default, per = ["fp32"], {}
    for part in (p.strip() for p in spec.split(";") if p.strip()):
        target, _, lst = part.rpartition("=")
        vals = [v.strip() for v in lst.split(",") if v.strip()]
        bad = [v for v in vals if v not in PRECISIONS] + ([target] if target and target not in TARGETS else [])
        if bad:
            raise SystemExit(f"--precisions: unknown {', '.join(bad)}")
        if target:
            per[target.strip()] = vals
        else:
            default = vals
    return {t: [p for p in per.get(t, default) if p in TARGETS[t].precisions] for t in targets}


def read_precision(bundle_dir: Path) -> dict:
    """One precision's row of the precisions page from its bundle's manifest.json."""
    from restorekit.core.targets import MODEL_FILES

    man = json.loads((bundle_dir / "manifest.json").read_text())
    m, model_file, recipe = man["metrics"], MODEL_FILES[man["target"]], man.get("recipe") or {}
    size = sum(f["bytes"] for f in man["files"] if f["path"] == model_file or f["path"].startswith(model_file + "/"))
    db, how = m.get("fidelity_psnr_db"), "measured" if m.get("validated") else None
    for key, kind in (("simulated_weights_psnr_db", "simulated (decompressed weights)"),
                      ("simulated_fp16_psnr_db", "simulated (fp16)"), ("simulated_w8a8_psnr_db", "simulated (w8a8)")):
        if db is None and m.get(key) is not None:
            db, how = m[key], kind
    kept = recipe.get("fp16_kept_float") or {}
    lat, ref = m.get("latency_ms_p50"), m.get("reference_latency_ms_p50")
    return {"size_mb": size / 1e6, "psnr": db, "how": how, "bar": m.get("min_fidelity_db"),
            "sanity": m.get("sanity_passed"), "sanity_failures": m.get("sanity_failures") or [],
            "kept": len(kept) if man["precision"] == "fp16" else None, "kept_nodes": recipe.get("fp16_kept_float_nodes"),
            "kept_names": sorted(kept)[:6], "latency_ratio": lat / ref if lat and ref else None,
            "latency_ms": lat, "reference_ms": ref, "nonfinite": m.get("nonfinite"),
            "structure_ok": m.get("structure_ok"), "params": man["source"].get("params"),
            "fp16_arithmetic": m.get("simulated_fp16_psnr_db") if m.get("validated") else None}


def read_bundle(bundle_dir: Path, task: str) -> dict:
    """A cell's result from a written bundle's manifest.json."""
    from restorekit.core.targets import MODEL_FILES

    man = json.loads((bundle_dir / "manifest.json").read_text())
    m, model_file = man["metrics"], MODEL_FILES[man["target"]]
    size = sum(f["bytes"] for f in man["files"] if f["path"] == model_file or f["path"].startswith(model_file + "/"))
    res = {"size_mb": size / 1e6, "params": man["source"].get("params"), "tile": man["tiling"].get("tile"),
           "architecture": man["source"].get("architecture")}
    if man["target"] == "coreml" and not m.get("validated"):
        ok = bool(m.get("structure_ok"))
        ops = m.get("mil_ops")
        ops = sum(ops.values()) if isinstance(ops, dict) else ops
        res.update(ok=ok, metric=f"{ops} MIL ops (structural)")
        if not ok:
            res["run_error"] = "; ".join(c for c in m.get("structure_checks", []) if c.startswith("✗"))[:200]
    elif task == "detect":
        err = m.get("max_abs_err")
        res.update(ok=err is not None and err <= MAX_ABS, metric=f"max abs {err:.1e}" if err is not None else "max abs ?")
    else:
        db = m.get("fidelity_psnr_db")
        res.update(ok=db is not None and db >= MIN_DB and not m.get("nonfinite"), psnr=db,
                   metric=f"{db:.1f} dB" if db is not None else "no PSNR")
    return res


class Checkpoints:
    """One checkpoint file per architecture, saved (in a subprocess) by the first cell that needs it."""

    def __init__(self, folder: Path, timeout: int, names: list[str]):
        self.folder, self.timeout = folder, timeout
        self.paths: dict[str, tuple[str | None, str]] = {}
        self.locks: dict[str, threading.Lock] = {n: threading.Lock() for n in names}

    def get(self, name: str, small: bool) -> tuple[str | None, str]:
        """(path, "") once saved, or (None, why it could not be saved)."""
        with self.locks[name]:
            if name not in self.paths:
                self.paths[name] = self._save(name, small)
            return self.paths[name]

    def _save(self, name: str, small: bool) -> tuple[str | None, str]:
        from restorekit.models.arches import ARCHES

        if ARCHES[name].real_weights:
            return ARCHES[name].weights, ""
        folder = self.folder / name
        cmd = [sys.executable, __file__, "--save", name, "small" if small else "published", str(folder)]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, timeout=self.timeout, cwd=ROOT)
        except subprocess.TimeoutExpired:
            return None, f"saving the checkpoint timed out after {self.timeout} s"
        line = next((ln for ln in proc.stdout.splitlines()[::-1] if ln.startswith("CHECKPOINT ")), None)
        if line is None:
            return None, "saving the checkpoint failed: " + error_line(proc.stderr, proc.returncode)
        return line[len("CHECKPOINT "):], ""


def run_one(name: str, target: str, small: bool, timeout: int, ckpts: Checkpoints,
            precisions: tuple[str, ...] = (PRECISION,)) -> dict:
    """One cell: ``restorekit bundle`` on the architecture's checkpoint for ``target`` at ``precisions`` (one
    call), read from its manifests: the fp32 bundle (else the first) as the cell, every precision under
    ``by_precision``."""
    from restorekit.models.arches import ARCHES

    arch = ARCHES[name]
    path, why = ckpts.get(name, small)
    if path is None:
        return {"status": "error", "reason": why}
    out = Path(tempfile.mkdtemp(prefix=f"{name}-{target}-", dir=ckpts.folder))
    photos = FACE_PHOTOS if arch.task in ("face", "detect") else PHOTOS
    exe = Path(sys.executable).with_name("restorekit")
    cmd = [str(exe), "bundle", path, "--targets", target, "--precisions", ",".join(precisions),
           "--tile", str(tile_size(arch.spec(small))), "--out", str(out), "--eval-images", str(photos)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=ROOT)
    except subprocess.TimeoutExpired:
        return {"status": "fail", "reason": f"timed out after {timeout} s"}
    by_precision = {p: read_precision(f[0].parent) for p in precisions
                    if (f := sorted(out.glob(f"*/{target}-{p}/manifest.json")))}
    primary = PRECISION if PRECISION in precisions else precisions[0]
    found = sorted(out.glob(f"*/{target}-{primary}/manifest.json"))
    if not found:
        shutil.rmtree(out, ignore_errors=True)
        return {"status": "fail", "reason": error_line(proc.stderr, proc.returncode)[:300], "checkpoint": Path(path).name,
                "by_precision": by_precision, "bundle_s": round(time.time() - t0, 1)}
    res = read_bundle(found[0].parent, arch.task)
    res["by_precision"] = by_precision
    if len(by_precision) < len(precisions):  # restorekit stops at the first precision that raises
        res["reason"] = error_line(proc.stderr, proc.returncode)[:300]
    shutil.rmtree(out, ignore_errors=True)
    res.update(status="ok" if res["ok"] else "bad", bundle_s=round(time.time() - t0, 1), checkpoint=Path(path).name,
               gate_passed=proc.returncode == 0)
    return res


def cell(res: dict, path: str) -> str:
    """A table cell: the measured result, or why the cell failed and the recommended route."""
    if res["status"] == "pending":
        return "not run (the run stopped before this cell)"
    if res["status"] == "ok":
        return f"✓ {res['metric']}, {res['size_mb']:.2f} MB"
    if res["status"] == "bad":
        why = res.get("run_error") or f"{res.get('metric', '?')} < {MIN_DB:g} dB"
        return f"✗ bundled ({res['size_mb']:.2f} MB) but {why} — {path or 'investigate'}"
    reason = res["reason"].replace("|", "\\|")
    return f"✗ {reason} — {path or 'investigate'}"


def config_label(arch, small_requested: bool) -> str:
    """The configuration column: real weights, small, or published (and why, where small was asked for)."""
    if arch.real_weights:
        return "real weights"
    if small_requested and not arch.small_loadable:
        return "published (spandrel detects no smaller config)"
    if small_requested and not arch.configurable:
        return "published (the architecture has no smaller config)"
    return "small" if small_requested else "published"


def header(cmd: str, targets: list[str]) -> list[str]:
    """The page's opening lines and the table's header."""
    import coremltools
    import litert_torch
    import onnxruntime
    import torch

    return [
        "# Conversion coverage (fp32)", "",
        f"- Command: `{cmd.strip()}`",
        f"- Date: {__import__('datetime').date.today()}; machine: Linux x86-64, {os.cpu_count()} CPU cores (shared), no GPU",
        f"- Versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"litert-torch {getattr(litert_torch, '__version__', '?')}, coremltools {coremltools.__version__}",
        "- Path: the user's. Each registry net is saved as a checkpoint laid out like the official one (the "
        "`checkpoint` column: the inner network's state dict under the official wrapper key; real checkpoints as "
        "they are), and every cell is `restorekit bundle CHECKPOINT --targets T --precisions fp32 --tile S "
        "--eval-images PHOTOS` (spandrel detection, the loader's io wrappers, conversion, the bundle's validation); "
        "the result is read from the bundle's manifest.json.",
        f"- Validation: ONNX / TFLite bundles run on real photo crops (face photos for face models) and compared "
        f"with PyTorch: ✓ means the manifest's `fidelity_psnr_db` >= {MIN_DB:g} dB (peak 1, or max |PyTorch output| "
        f"where that is above 2: randomly initialised nets can leave [0, 1]) (detector: raw max abs error <= "
        f"{MAX_ABS:g}). Core ML cannot predict on Linux: ✓ there means the manifest's `structure_ok` (an ML program "
        "whose contract matches the manifest) with its MIL op count. Randomly initialised nets output noise, so the "
        "bundle's own output-sanity gate is not what these cells grade.",
        "- Config: `published` = the published configuration; `small` = a reduced configuration of the same "
        "architecture (fewer blocks/channels, randomly initialised) that spandrel detects from its weights; "
        "`real weights` = a real checkpoint.", "",
        "| architecture | task | config | checkpoint (loader + bundle) | " + " | ".join(targets) + " |",
        "|---|---|---|---|" + "---|" * len(targets),
    ]


def old_rows(out: Path, targets: list[str]) -> tuple[dict[str, list[str]], str, list[str]]:
    """``--update``: the table rows of the page at ``out`` (architecture -> its cells), its command line
    and its target columns (which must include ``targets``)."""
    text = out.read_text() if out.is_file() else ""
    cmd = next((ln.split("`")[1] for ln in text.splitlines() if ln.startswith("- Command: `")), "")
    head = next((ln for ln in text.splitlines() if ln.startswith("| architecture |")), "")
    columns = [c.strip() for c in head.strip().strip("|").split("|")][4:]
    if not columns or not set(targets) <= set(columns):
        raise SystemExit(f"--update: {out} has no table with the columns {', '.join(targets)}")
    rows = {}
    for ln in text.splitlines():
        cols = [c.strip() for c in ln.strip().strip("|").split(" | ")] if ln.startswith("| ") else []
        if len(cols) == 4 + len(columns) and cols[0] != "architecture":
            rows[cols[0]] = cols
    return rows, cmd, columns


def write_page(names, targets, plan, results, out: Path, old: tuple | None = None) -> str:
    """Write the markdown page of ``results`` to ``out`` and return it (cells not run yet show as such);
    with ``old`` (``--update``), the rows and cells of the page that this run did not measure are kept."""
    from restorekit.models.arches import ARCHES

    rows_old, cmd_old, targets = old or ({}, "", targets)
    names = [n for n in (ARCHES if old else names) if n in names or n in rows_old]
    results = {(n, t): results.get((n, t), {"status": "pending"}) for n in names for t in targets}
    shown, skip = [], False
    for a in sys.argv[1:]:  # without --update and --render FILE (a temporary results file)
        if not skip and a not in ("--update", "--render"):
            shown.append(a)
        skip = a == "--render"
    cmd = "python scripts/coverage.py " + " ".join(shown)
    if "--render" in sys.argv:  # cells measured by a --precisions run: its fp32 bundles are these cells
        cmd += "  # the fp32 cells of the --precisions run of docs/precisions.md (same bundles)"
    lines, n_both = header(f"{cmd_old}`, then re-running cells: `{cmd}" if old else cmd, targets), 0
    for name in names:
        arch, prev = ARCHES[name], rows_old.get(name)
        cells = {t: (prev[4 + i] if prev and results[name, t]["status"] == "pending" else cell(results[name, t], arch.path))
                 for i, t in enumerate(targets)}
        n_both += all(c.startswith("✓") for t, c in cells.items() if t in ("onnx", "tflite"))
        ckpt = next((f"`{results[name, t]['checkpoint']}`" for t in targets if results[name, t].get("checkpoint")),
                    prev[3] if prev else "–")
        config = prev[2] if prev and name not in plan else config_label(arch, plan[name])
        lines.append(f"| {name} | {arch.task} | {config} | {ckpt} | " + " | ".join(cells[t] for t in targets) + " |")
    lines += ["", f"**Summary:** {n_both} of {len(names)} architectures go through the loader and "
              f"`restorekit bundle` to {' and '.join(t for t in ('ONNX', 'TFLite') if t.lower() in targets)} "
              f"at >= {MIN_DB:g} dB (detector: max abs <= {MAX_ABS:g})."]
    out.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(lines) + "\n" + kept_sections(out)
    out.write_text(text)
    return text


def kept_sections(out: Path) -> str:
    """The hand-written sections (from the first ``## `` heading on) of the page already at ``out``."""
    if not out.is_file():
        return ""
    old = out.read_text().splitlines()
    start = next((i for i, ln in enumerate(old) if ln.startswith("## ")), None)
    return "" if start is None else "\n" + "\n".join(old[start:]) + "\n"


RUNS_NOTE = [""]  # --runs: how a rendered page's results were measured
PREC_COLUMNS = ("architecture", "config", "target", "precision", "size MB", "size / fp32", "fidelity vs fp32 PyTorch",
                "fidelity from", "fp16 arithmetic (PyTorch half)", "sanity", "fp16: kept fp32",
                "latency p50 bundle / PyTorch", "cell wall s")


def precision_row(name: str, config: str, target: str, p: str, res: dict) -> list[str]:
    """One row of the precisions page (a precision of one cell)."""
    r = res.get("by_precision", {}).get(p)
    if r is None:
        why = ("not run (the run stopped before this cell)" if res["status"] == "pending"
               else "no bundle (the call stopped at this or an earlier precision): "
               + (res.get("reason") or "not recorded").replace("|", "\\|")[:200])
        return [name, config, target, p, why] + ["–"] * (len(PREC_COLUMNS) - 5)
    fp32 = res["by_precision"].get("fp32")
    config += f", {r['params'] / 1e6:.1f} M params" if r.get("params") else ""
    ratio = f"{r['size_mb'] / fp32['size_mb']:.3f}" if fp32 and p != "fp32" else "1" if p == "fp32" else "–"
    db = "–" if r["psnr"] is None else f"{r['psnr']:.1f} dB" + (f" (bar {r['bar']:g})" if r["bar"] is not None else "")
    how = r["how"] or ("structure only (Core ML fp32 is not simulated)" if r["structure_ok"] else "–")
    sanity = ("–" if r["sanity"] is None else "✓" if r["sanity"]
              else f"✗ {len(r['sanity_failures'])}: " + "; ".join(r["sanity_failures"][:2]).replace("|", "\\|")[:160])
    kept = "–" if r["kept"] is None else str(r["kept"]) + (f" modules ({r['kept_nodes']} ONNX nodes)" if r["kept_nodes"] else
                                                            " modules" if r["kept"] else "")
    lat = "–" if r["latency_ratio"] is None else f"{r['latency_ratio']:.2f} ({r['latency_ms']:.0f} / {r['reference_ms']:.0f} ms)"
    wall = f"{res['bundle_s']:.0f}" if p == next(iter(res["by_precision"]), None) and res.get("bundle_s") else ""
    half = ("–" if p != "fp16" or target == "coreml" else "not recorded" if "fp16_arithmetic" not in r
            else "none (no CPU half kernel)" if r["fp16_arithmetic"] is None else f"{r['fp16_arithmetic']:.1f} dB")
    return [name, config, target, p, f"{r['size_mb']:.2f}", ratio, db, how, half, sanity, kept, lat, wall]


def acceptance(rows: list[list[str]]) -> list[str]:
    """Per (architecture, target): fp16 >= 40 dB vs fp32, a compressed bundle <= 1/3 of fp32, sanity passing."""
    cells: dict[tuple[str, str], list[list[str]]] = {}
    for r in rows:
        cells.setdefault((r[0], r[2]), []).append(r)
    out = ["## Acceptance per (architecture, target)", "",
           "fp16 >= 40 dB vs fp32 PyTorch (and its fp16 arithmetic where recorded); a compressed bundle (any precision other than fp32/fp16) at most 1/3 of "
           "the fp32 bundle's size that meets its own fidelity bar; sanity passing on every measured precision (Core ML: not run on Linux).", "",
           "| architecture | target | fp16 >= 40 dB | compressed <= 1/3 fp32 | sanity |", "|---|---|---|---|---|"]
    for (name, target), rs in cells.items():
        def num(s):
            try:
                return float(s.split()[0])
            except (ValueError, IndexError):
                return None
        fp16 = [(num(r[6]), num(r[8])) for r in rs if r[3] == "fp16"]
        if not fp16 or fp16[0][0] is None:
            fp16_ok = "not run"
        else:  # both the runtime's result and, where recorded, its fp16 arithmetic
            (db, half), = fp16[:1]
            ok = db >= 40 and (half is None or half >= 40)
            fp16_ok = f"{'✓' if ok else '✗'} {db:.1f} dB" + ("" if half is None else f", fp16 arithmetic {half:.1f} dB")
        def meets_bar(r):  # "33.6 dB (bar 40)": the bundle's own fidelity bar; sanity not failed
            bar = r[6].split("(bar ")[-1].rstrip(")") if "(bar " in r[6] else None
            return num(r[6]) is not None and (bar is None or num(r[6]) >= float(bar)) and not r[9].startswith("✗")
        comp = [(num(r[5]), r[3], meets_bar(r), r[6]) for r in rs
                if r[3] not in ("fp32", "fp16") and num(r[5]) is not None]
        good = [c for c in comp if c[2]]
        best = min(good or comp, default=None)
        comp_ok = ("not run" if best is None else f"{'✓' if best[0] <= 1 / 3 and best[2] else '✗'} {best[1]} {best[0]:.3f}"
                   + ("" if best[2] else f" but {best[3]}: below its bar"))
        san = [r[9] for r in rs if r[9] not in ("–",) and not r[4].startswith(("not run", "no bundle"))]
        san_ok = "not measured" if not san else "✓" if all(x == "✓" for x in san) else \
            "✗ " + ", ".join(r[3] for r in rs if r[9].startswith("✗"))
        out.append(f"| {name} | {target} | {fp16_ok} | {comp_ok} | {san_ok} |")
    return out


def write_precisions_page(names, targets, precs, plan, results, out: Path, update: bool) -> str:
    """The precisions page: one row per (architecture, target, precision); with ``update`` the rows of the
    page at ``out`` whose (architecture, target) this run does not measure are kept."""
    import coremltools
    import litert_torch
    import onnxruntime
    import torch

    from restorekit.models.arches import ARCHES

    text = out.read_text() if update and out.is_file() else ""
    argv, skip = [], False
    for a in sys.argv[1:]:  # the recorded command: without --update and the results-file options
        if not skip and a not in ("--update", "--results-json", "--render", "--runs"):
            argv.append(f"'{a}'" if ";" in a else a)
        skip = a in ("--results-json", "--render", "--runs")
    cmd = "python scripts/coverage.py " + " ".join(argv)
    cmds = [c for c in (ln[len("- Command: "):].strip() for ln in text.splitlines() if ln.startswith("- Command: "))][:1]
    cmds = [c for c in (cmds[0].split("; then ") if cmds else []) if c.strip("`") != cmd] + [f"`{cmd}`"]
    rows = []
    for ln in text.splitlines():
        cols = [c.strip() for c in ln.strip().strip("|").split(" | ")] if ln.startswith("| ") else []
        if len(cols) == len(PREC_COLUMNS) and cols[0] != "architecture" and (cols[0] not in names or cols[2] not in targets):
            rows.append(cols)
    for name in names:
        arch = ARCHES[name]
        config = config_label(arch, plan[name])
        for t in targets:
            res = results.get((name, t), {"status": "pending"})
            rows += [precision_row(name, config, t, p, res) for p in precs[t]]
    order = {n: i for i, n in enumerate(ARCHES)}
    rows.sort(key=lambda r: (order.get(r[0], 99), r[2]))
    lines = [
        "# Precisions of the big networks: size, fidelity, latency", "",
        "- Command(s): " + "; then ".join(cmds),
        *([f"- Runs: {RUNS_NOTE[0]}"] if RUNS_NOTE[0] else []),
        f"- Date: {__import__('datetime').date.today()}; machine: Linux x86-64, {os.cpu_count()} CPU cores (shared), "
        "no GPU; latency is onnxruntime / LiteRT on these CPU cores",
        f"- Versions: torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"litert-torch {getattr(litert_torch, '__version__', '?')}, coremltools {coremltools.__version__}",
        "- Weights: **random** (registry nets, seed 0, saved in the official checkpoint layout; real weights cannot "
        "be downloaded here). Fidelity therefore says how exactly each precision reproduces the fp32 PyTorch model, "
        "not how good the restoration is; random weights also make activations larger than trained ones, which is "
        "what the fp16 safety check reacts to (layers kept in fp32).",
        "- Each (architecture, target) cell is one `restorekit bundle CHECKPOINT --targets T --precisions P1,P2,.. "
        "--tile S --eval-images PHOTOS` call; every row is read from that bundle's manifest.json (generated by "
        "scripts/coverage.py, not typed).",
        "- Columns: `size MB` = the model file (or .mlpackage); `size / fp32` = over the same target's fp32 bundle; "
        "`fidelity vs fp32 PyTorch` = manifest `fidelity_psnr_db` (mean PSNR over the eval crops vs the fp32 PyTorch "
        "model), or for Core ML (cannot predict on Linux) the PyTorch simulation of its decompressed weights / fp16 "
        "(`simulated_weights_psnr_db` / `simulated_fp16_psnr_db`), with the bundle's bar; `fp16 arithmetic` = for "
        "ONNX / TFLite fp16 bundles, whose CPU runtimes compute in float32, the same model run in PyTorch half (the "
        "fp16 arithmetic of a GPU, TensorRT or the GPU delegate; manifest `simulated_fp16_psnr_db`, gated at the "
        "bundle's bar; `not recorded`: measured before restorekit recorded it); `sanity` = manifest "
        "`sanity_passed` (failures counted); `fp16: kept fp32` = modules in the recipe's `fp16_kept_float` (their "
        "values or weights overflow fp16); `latency` = bundle p50 over the PyTorch reference p50, both measured side "
        "by side in the same run on one tile (manifest `latency_ms_p50` / `reference_latency_ms_p50`); `cell wall s` "
        "= the whole `restorekit bundle` call (all precisions of the cell).", "",
        "| " + " | ".join(PREC_COLUMNS) + " |", "|" + "---|" * len(PREC_COLUMNS),
    ] + ["| " + " | ".join(r) + " |" for r in rows] + [""] + acceptance(rows)
    out.parent.mkdir(parents=True, exist_ok=True)
    page = "\n".join(lines) + "\n"
    out.write_text(page)
    return page


def main() -> None:
    """Run the cells (``--jobs`` at a time), print one line per cell and write the page."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", nargs="*", help="architecture names (default: all)")
    ap.add_argument("--targets", default="onnx,tflite,coreml")
    ap.add_argument("--config", choices=("auto", "small", "published"), default="auto",
                    help="auto: published where it converts in reasonable time on 2 cores, else small")
    ap.add_argument("--timeout", type=int, default=300, help="seconds per cell (and per checkpoint save)")
    ap.add_argument("--jobs", type=int, default=1, help="cells run in parallel")
    ap.add_argument("--precisions", default="fp32",
                    help="fp32 (default: the coverage page), or e.g. 'fp32,fp16,w8;coreml=fp32,fp16,palettize6' "
                         "(default list; per-target lists): every precision in one bundle call per cell, and the "
                         "precisions page")
    ap.add_argument("--out", help="default: docs/coverage.md, docs/precisions.md with --precisions beyond fp32")
    ap.add_argument("--update", action="store_true",
                    help="re-measure the given cells only: the page's other rows and cells are kept")
    ap.add_argument("--results-json", help="also dump the measured cells to this JSON file (after every cell)")
    ap.add_argument("--render", help="run nothing: write the page from a --results-json file (same other options)")
    ap.add_argument("--runs", help="with --render: how the results were measured (the runs merged), a line on the page")
    ap.add_argument("--save", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.save:
        return save(args.save[0], args.save[1] == "small", Path(args.save[2]))
    RUNS_NOTE[0] = args.runs or ""

    from concurrent.futures import ThreadPoolExecutor

    from restorekit.models.arches import ARCHES

    names = args.only or list(ARCHES)
    unknown = [n for n in names if n not in ARCHES]
    if unknown:
        ap.error(f"unknown architecture(s) {', '.join(unknown)}: choose from {', '.join(ARCHES)}")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    plan = {n: args.config == "small" or (args.config == "auto" and not ARCHES[n].published_fast) for n in names}
    precs = parse_precisions(args.precisions, targets)
    by_precision = any(ps != [PRECISION] for ps in precs.values())
    args.out = args.out or str(ROOT / ("docs/precisions.md" if by_precision else "docs/coverage.md"))
    old = old_rows(Path(args.out), targets) if args.update and not by_precision else None

    def page():
        if by_precision:
            return write_precisions_page(names, targets, precs, plan, results, Path(args.out), args.update)
        return write_page(names, targets, plan, results, Path(args.out), old)

    results, done = {}, threading.Lock()
    if args.render:
        results.update({(c["name"], c["target"]): c["result"] for c in json.loads(Path(args.render).read_text())})
        print(page())
        return
    with tempfile.TemporaryDirectory(prefix="coverage-") as tmp:
        ckpts = Checkpoints(Path(tmp), args.timeout, names)

        def job(nt):
            t0 = time.time()
            res = run_one(nt[0], nt[1], effective_small(ARCHES[nt[0]], plan[nt[0]]), args.timeout, ckpts,
                          tuple(precs[nt[1]]))
            print(f"{nt[0]:22s} {nt[1]:7s} {res['status']:6s} {time.time() - t0:6.1f}s  "
                  f"{res.get('metric') or res.get('run_error') or res.get('reason')}", flush=True)
            for p, r in res.get("by_precision", {}).items() if by_precision else ():
                print(f"    {p:11s} {r['size_mb']:8.2f} MB  {r['psnr'] if r['psnr'] is None else round(r['psnr'], 1)} dB "
                      f"({r['how']})  sanity {r['sanity']}  kept {r['kept']}  latency x{r['latency_ratio'] or 0:.2f}",
                      flush=True)
            with done:  # the page is rewritten after every cell: a stopped run leaves what it measured
                results[nt] = res
                page()
                if args.results_json:
                    Path(args.results_json).write_text(json.dumps(
                        [{"name": n, "target": t, "result": r} for (n, t), r in results.items()], indent=1))

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(job, [(n, t) for n in names for t in targets]))
    print(page())


if __name__ == "__main__":
    main()
