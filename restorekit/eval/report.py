"""report.json and report.html for a model's bundles (self-contained: images embedded)."""

from __future__ import annotations

import base64
import datetime as dt
import html
import json
from pathlib import Path

import cv2
import numpy as np

from restorekit import __version__
from restorekit.fileio import atomic_write_text

AMPLIFY = 20.0  # difference heat-map gain


def _png_b64(rgb: np.ndarray) -> str:
    arr = np.clip(np.rint(rgb[:, :, ::-1] * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    return base64.b64encode(buf.tobytes()).decode()


def side_by_side_crops(crops: dict[str, np.ndarray], scale: int, size: int = 128) -> dict[str, np.ndarray]:
    """Centre crops (output resolution) of input (nearest-upscaled), reference, bundle, |difference|."""
    ref = crops["reference"][0].transpose(1, 2, 0)
    out = np.nan_to_num(crops["bundle"][0].transpose(1, 2, 0))
    inp = crops["input"][0].transpose(1, 2, 0)
    inp = cv2.resize(inp, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST)
    s = min(size, ref.shape[0], ref.shape[1])
    y, x = (ref.shape[0] - s) // 2, (ref.shape[1] - s) // 2
    cut = lambda a: a[y : y + s, x : x + s]  # noqa: E731
    diff = np.abs(cut(out) - cut(ref)).mean(axis=2) * AMPLIFY
    heat = cv2.applyColorMap(np.clip(diff * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1] / 255.0
    return {"input": cut(inp), "reference": cut(ref), "bundle": cut(out), f"difference x{AMPLIFY:.0f}": heat}


def report_dict(spec, results) -> dict:
    """The machine-readable report: the model and every bundle's metrics."""
    return {
        "schema_version": 1,
        "toolkit_version": __version__,
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "model": spec.to_dict(),
        "bundles": [
            {"bundle": f"{r.target}-{r.precision}", "path": str(r.path), "target": r.target,
             "precision": r.precision, "passed": r.passed, "detail": r.detail,
             "build_seconds": round(r.seconds, 2), "metrics": r.manifest.metrics}
            for r in results
        ],
    }


def write_reports(model_dir: Path, spec, results, tiles) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.html`` atomically into ``model_dir``."""
    data = report_dict(spec, results)
    jpath, hpath = model_dir / "report.json", model_dir / "report.html"
    atomic_write_text(jpath, json.dumps(data, indent=2, default=str) + "\n")
    atomic_write_text(hpath, _html(spec, results, tiles))
    return jpath, hpath


def _fmt(v, nd=1):
    return "–" if v is None or (isinstance(v, float) and not np.isfinite(v)) else f"{v:.{nd}f}"


def _html(spec, results, tiles) -> str:
    rows, figures = [], []
    for r in results:
        m = r.manifest.metrics
        mark = "✓" if r.passed else "✗"
        size_kb = sum(f["bytes"] for f in r.manifest.files) / 1024
        rows.append(
            f"<tr class={'ok' if r.passed else 'bad'}><td>{mark}</td><td>{r.target}</td><td>{r.precision}</td>"
            f"<td>{_fmt(m.get('fidelity_psnr_db'))}</td><td>{_fmt(m.get('fidelity_psnr_min_db'))}</td>"
            f"<td>{_fmt(m.get('fidelity_ssim'), 4)}</td><td>{_fmt(m.get('max_abs_err'), 4)}</td>"
            f"<td>{m.get('nonfinite', '–')}</td><td>{_fmt(m.get('latency_ms_p50'))}</td>"
            f"<td>{_fmt(m.get('latency_ms_p95'))}</td><td>{_fmt(m.get('reference_latency_ms_p50'))}</td>"
            f"<td>{size_kb:.0f}</td><td>{html.escape(r.detail)}</td></tr>"
        )
        if r.crops:
            panels = side_by_side_crops(r.crops, spec.scale)
            imgs = "".join(
                f"<figure><img src='data:image/png;base64,{_png_b64(v)}' width=192><figcaption>{k}</figcaption></figure>"
                for k, v in panels.items()
            )
            figures.append(f"<h3>{r.target}-{r.precision} on {html.escape(tiles[0].name)}</h3><div class=row>{imgs}</div>")
    head = ("<tr><th></th><th>target</th><th>precision</th><th>PSNR mean dB</th><th>PSNR worst dB</th><th>SSIM</th>"
            "<th>max |diff|</th><th>non-finite</th><th>p50 ms</th><th>p95 ms</th><th>reference p50 ms</th>"
            "<th>size KiB</th><th>validation</th></tr>")
    device = next((r.manifest.metrics.get("reference_device") for r in results
                   if r.manifest.metrics.get("reference_device")), "")
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>restorekit report: {html.escape(spec.name)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;
padding:4px 8px;text-align:right}}tr.bad{{background:#fdd}}.row{{display:flex;gap:8px}}figure{{margin:0}}
img{{image-rendering:pixelated}}figcaption{{text-align:center;font-size:12px}}</style></head><body>
<h1>restorekit bundles: {html.escape(spec.name)}</h1>
<p>{html.escape(spec.architecture)}, task {spec.task}, x{spec.scale}, {spec.params:,} params,
{spec.macs_per_megapixel / 1e9:.2f} GMAC per input megapixel. Fidelity is PSNR of each bundle against the fp32 PyTorch
reference ({html.escape(device)}) on {len(tiles)} centre crops of real photos; latency of bundle and reference measured
side by side in the same run on the same {html.escape('x'.join(map(str, tiles[0].x.shape)))} input.
Core ML bundles cannot run off macOS: they are checked structurally there.</p>
<table>{head}{''.join(rows)}</table>
<h2>Side-by-side crops</h2>{''.join(figures)}
<p>restorekit {__version__}</p></body></html>
"""
