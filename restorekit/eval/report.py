"""report.json and report.html for a model's bundles (self-contained: images embedded)."""

from __future__ import annotations

import base64
import datetime as dt
import html
from pathlib import Path

import cv2
import numpy as np

from restorekit import __version__
from restorekit.core.files import atomic_write_text, json_text



def _png_b64(rgb: np.ndarray) -> str:
    arr = np.clip(np.rint(rgb[:, :, ::-1] * 255), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".png", arr)
    return base64.b64encode(buf.tobytes()).decode()


def side_by_side_crops(crops: dict[str, np.ndarray], scale: int, size: int = 128) -> dict[str, np.ndarray]:
    """Centre crops (output resolution) of input (nearest-upscaled), reference, bundle, |difference|.

    The difference heat map is scaled so that its 99.5th percentile (at least one 8-bit step) is
    full scale; the caption says what full scale is, so maps of different bundles can be read.
    """
    ref = crops["reference"][0].transpose(1, 2, 0)
    out = np.nan_to_num(crops["bundle"][0].transpose(1, 2, 0))
    inp = crops["input"][0].transpose(1, 2, 0)
    inp = cv2.resize(inp, (ref.shape[1], ref.shape[0]), interpolation=cv2.INTER_NEAREST)
    s = min(size, ref.shape[0], ref.shape[1])
    y, x = (ref.shape[0] - s) // 2, (ref.shape[1] - s) // 2
    cut = lambda a: a[y : y + s, x : x + s]  # noqa: E731
    diff = np.abs(cut(out) - cut(ref)).max(axis=2)
    full = max(float(np.percentile(diff, 99.5)), 1 / 255)
    heat = cv2.applyColorMap(np.clip(diff / full * 255, 0, 255).astype(np.uint8), cv2.COLORMAP_INFERNO)[:, :, ::-1] / 255.0
    return {"input": cut(inp), "reference": cut(ref), "bundle": cut(out), f"|difference|, full scale {full:.2g}": heat}


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
    atomic_write_text(jpath, json_text(data, indent=2, default=str))
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


# ---------------------------------------------------------------- `restorekit eval --html`


def _plot_png_b64(draw) -> str:
    """Render a matplotlib figure drawn by ``draw(fig)`` to a base64 PNG (Agg, no display)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.4, 3.0), dpi=100, layout="constrained")
    draw(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode()


def _fidelity_plot(rows: list[dict], min_psnr: float | None) -> str:
    def draw(fig):
        ax = fig.subplots()
        vals = [min(r["psnr_db"], 100.0) for r in rows]
        ax.bar(range(len(rows)), vals, color=["#c33" if min_psnr is not None and v < min_psnr else "#48a" for v in vals])
        ax.set_xticks(range(len(rows)), [r["image"] for r in rows], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("PSNR vs reference (dB)")
        ax.set_title("Fidelity per image (capped at 100 dB in this plot)")
        if min_psnr is not None:
            ax.axhline(min_psnr, color="#c33", linestyle="--", label=f"gate {min_psnr:g} dB")
            ax.legend(loc="lower right")
        ax.set_ylim(bottom=min(vals + [min_psnr or 100]) - 5 if vals else 0)

    return _plot_png_b64(draw)


def _latency_plot(lat: dict) -> str:
    def draw(fig):
        ax = fig.subplots()
        names = [f"bundle\n{lat['bundle_device'].split()[-1]}", f"reference\n{lat['reference_device'].split(' fp32')[0]}"]
        p50 = [lat["bundle_ms_p50"], lat["reference_ms_p50"]]
        p95 = [lat["bundle_ms_p95"], lat["reference_ms_p95"]]
        ax.barh(names, p50, color=["#48a", "#999"], label="p50")
        ax.errorbar(p95, names, fmt="|", color="k", markersize=14, label="p95")
        ax.set_xlabel(f"latency (ms), input {lat['input']}, same run")
        ax.tick_params(axis="y", labelsize=8)
        ax.legend(loc="lower right")
        ax.set_title("Latency per backend")

    return _plot_png_b64(draw)


def eval_html(data: dict, panels, failures: list, gates: dict) -> str:
    """The self-contained `eval` page: summary, gates, per-image rows, crops and plots."""
    b, s, lat = data["bundle"], data["summary"], data["latency"]
    esc = html.escape
    verdict = ("<p class=bad><b>Gates failed</b></p><ul>" + "".join(f"<li>{esc(str(f))}</li>" for f in failures) + "</ul>"
               if failures else ("<p class=ok><b>All gates passed</b></p>" if gates else "<p>No gates given.</p>"))
    gate_text = ", ".join(f"{k} {v:g}" for k, v in gates.items()) or "none"
    summary = (f"<tr><td>{s['images']}</td><td>{_fmt(s['psnr_db_mean'], 2)}</td><td>{_fmt(s['psnr_db_min'], 2)}</td>"
               f"<td>{_fmt(s['ssim_mean'], 4)}</td><td>{_fmt(s['max_abs_err'], 4)}</td><td>{_fmt(s['delta_e00_mean'], 3)}</td>"
               f"<td>{s['nonfinite']}</td><td>{s['clipped_new']}</td><td>{_fmt(lat['bundle_ms_p50'])}</td>"
               f"<td>{_fmt(lat['reference_ms_p50'])}</td></tr>")
    failing = {f.image for f in failures}
    rows = "".join(
        f"<tr class={'bad' if r['image'] in failing else 'ok'}><td style='text-align:left'>{esc(r['image'])}</td>"
        f"<td>{_fmt(r['psnr_db'], 2)}</td><td>{_fmt(r['ssim'], 4)}</td><td>{_fmt(r['max_abs_err'], 4)}</td>"
        f"<td>{_fmt(r['delta_e00'], 3)}</td><td>{r['nonfinite']}</td><td>{r['clipped_new']}</td></tr>"
        for r in data["per_image"])
    quality = ""
    if data.get("quality"):
        q = data["quality"]
        qrows = "".join(
            f"<tr><td style='text-align:left'>{esc(r['image'])}</td><td>{_fmt(r['bicubic_psnr_db'], 2)}</td>"
            f"<td>{_fmt(r['reference_psnr_db'], 2)}</td><td>{_fmt(r['bundle_psnr_db'], 2)}</td>"
            f"<td>{_fmt(r['reference_ssim'], 4)}</td><td>{_fmt(r['bundle_ssim'], 4)}</td></tr>"
            for r in q["per_image"] + [dict(image="mean", **q["mean"])])
        quality = (f"<h2>Quality against the clean originals</h2><p>Each crop degraded by {esc(q['degradation'])} at "
                   f"seed {q['seed']}; PSNR/SSIM of each output against the clean crop.</p><table><tr><th>image</th>"
                   f"<th>bicubic dB</th><th>reference dB</th><th>bundle dB</th><th>reference SSIM</th>"
                   f"<th>bundle SSIM</th></tr>{qrows}</table>")
    crops = []
    for p in panels:
        crop = side_by_side_crops({"input": p.input.transpose(2, 0, 1)[None], "reference": p.reference.transpose(2, 0, 1)[None],
                                   "bundle": p.bundle.transpose(2, 0, 1)[None]}, b.get("scale", 1))
        imgs = "".join(f"<figure><img src='data:image/png;base64,{_png_b64(v)}' width=192><figcaption>{esc(k)}</figcaption>"
                       f"</figure>" for k, v in crop.items())
        crops.append(f"<h3>{esc(p.name)}</h3><div class=row>{imgs}</div>")
    fid_plot = _fidelity_plot(data["per_image"], gates.get("min_psnr"))
    lat_plot = _latency_plot(lat)
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>restorekit eval: {esc(b['name'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:80em}}table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}tr.bad,p.bad{{background:#fdd}}p.ok{{background:#dfd}}
p.ok,p.bad{{padding:.4em}}.row{{display:flex;flex-wrap:wrap;gap:8px}}figure{{margin:0}}img{{image-rendering:pixelated;max-width:100%}}
figcaption{{text-align:center;font-size:12px}}</style></head><body>
<h1>restorekit eval: {esc(b['name'])} {esc(b['target'])}-{esc(b['precision'])}</h1>
<p>Bundle <code>{esc(b['path'])}</code> ({esc(lat['bundle_device'])}) against the full-precision reference
({esc(lat['reference_device'])}) on {s['images']} centre crops of {data['images']['crop']}x{data['images']['crop']} from
<code>{esc(data['images']['folder'])}</code>. Gates: {esc(gate_text)}. {esc(data['created_at'])}, restorekit {esc(data['toolkit_version'])}.</p>
{verdict}
<h2>Summary</h2><table><tr><th>images</th><th>PSNR mean dB</th><th>PSNR worst dB</th><th>SSIM mean</th><th>max |diff|</th>
<th>ΔE00 mean</th><th>non-finite</th><th>new clipped px</th><th>bundle p50 ms</th><th>reference p50 ms</th></tr>{summary}</table>
<div class=row><img src='data:image/png;base64,{fid_plot}'><img src='data:image/png;base64,{lat_plot}'></div>
<h2>Per image</h2><table><tr><th>image</th><th>PSNR dB</th><th>SSIM</th><th>max |diff|</th><th>ΔE00</th><th>non-finite</th>
<th>new clipped px</th></tr>{rows}</table>
{quality}
<h2>Side-by-side crops</h2><p>Input (nearest-upscaled), reference output, bundle output, and |bundle − reference|
(largest channel) as a heat map whose full scale is given under it.</p>{''.join(crops)}
</body></html>
"""
