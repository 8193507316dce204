"""Output-sanity checks: a bundle's output that is broken rather than merely less accurate.

fp16 and int8 restoration networks can fail without raising anything: an overflowing or
saturated activation gives a solid-colour image (GFPGAN under TensorRT fp16), a black one
(IOPaint fp16) or a colour cast. A PSNR bar catches these only when one is set and tight enough,
so these checks are always on, in ``restorekit bundle`` (a failing bundle counts as failed) and
in ``restorekit eval`` (exit 1). Each compares one bundle output with the fp32 reference output
of the same image (HxWxC floats, pixels in [0, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SanityBars:
    """The bars of the sanity checks, in pixel units (full scale 1; scaled by the reference's peak
    for a reference that is not pixels, see ``fidelity.psnr_peak``).

    A correct bundle clears them by orders of magnitude: the built-in model's int8 bundles (onnx,
    tflite; sample_images, 256 px crops) keep std(output)/std(reference) within 1 +- 0.0005,
    channel means within 3e-5 and ΔE00 below 0.26 of the reference, its fp16 ones closer still.
    They are also loose against the fidelity bars: on an image at the lowest bar (int8, 38 dB:
    RMS error 0.0126) |std(out) - std(ref)| is at most that RMS error and a channel's mean shift
    at most sqrt(3) times it (0.022), so such an image cannot fail the mean-shift bar and fails
    the ratio bars only where its whole error budget went into flattening (or adding noise to)
    a crop of little texture. The failures
    they are made for sit far on the other side: a solid colour has a ratio ~0; a black image a
    ratio 0 and ΔE00 > 20; a cast a person notices is ΔE00 above 2-3 or a channel mean off by
    8 levels of 255.
    """

    #: Below this std (over all pixels and channels) the reference itself is near-flat (a sky, a
    #: blank wall): the flat check is skipped and the ratio's denominator is floored here, so
    #: that quantization noise on a flat crop does not read as a noise explosion.
    std_floor: float = 0.02
    #: Flat output: std(output) / std(reference) below this (a solid colour or black image is ~0;
    #: even a strong denoiser's int8 bundle is within a few % of its reference).
    min_std_ratio: float = 0.5
    #: Noise explosion: the ratio above this (int8 noise adds ~1/255, far below the floor).
    max_std_ratio: float = 2.0
    #: Colour cast: mean CIEDE2000 of the image above this (2-3 is visible side by side).
    max_delta_e00: float = 5.0
    #: Colour shift: |mean(out_c) - mean(ref_c)| of any channel above this (~8 levels of 255).
    max_mean_shift: float = 0.03


#: The bars every bundle and eval is held to (declared once; docs/bundle-format.md, docs/ci.md).
SANITY_BARS = SanityBars()

_CHANNEL = ("R", "G", "B")


def sanity_row(out: np.ndarray, ref: np.ndarray, *, nonfinite: int, delta_e00: float | None, peak: float = 1.0,
               bars: SanityBars = SANITY_BARS) -> dict:
    """The sanity values of one image and the checks it fails, as per-image row keys.

    ``out`` is the bundle's output with non-finite values already replaced, ``ref`` the
    reference's (HxWxC, or HxW); ``nonfinite`` and ``delta_e00`` are the row's own. Returns
    ``std_ratio`` (std(out) / max(std(ref), floor)), ``mean_shift`` (the largest |channel mean
    difference|, None unless 3 channels) and ``sanity`` (the failed checks, one reason each;
    empty when the image passes). An image with non-finite values fails on them alone: the other
    values are then measured on replaced values and mean nothing."""
    out = np.asarray(out, np.float64)
    ref = np.asarray(ref, np.float64)
    rgb = out.ndim == 3 and out.shape[2] == 3
    std_ref = float(ref.std()) if ref.size else 0.0
    ratio = float(out.std()) / max(std_ref, bars.std_floor * peak) if out.size else 1.0
    shifts = (np.abs(out.mean(axis=(0, 1)) - ref.mean(axis=(0, 1))) / peak) if rgb and out.size else None
    reasons: list[str] = []
    if nonfinite:
        reasons.append(f"non-finite output ({nonfinite} NaN/inf values)")
    else:
        if std_ref >= bars.std_floor * peak and ratio < bars.min_std_ratio:
            reasons.append(f"flat output (std ratio {ratio:.3g} < {bars.min_std_ratio:g})")
        if ratio > bars.max_std_ratio:
            reasons.append(f"noise explosion (std ratio {ratio:.3g} > {bars.max_std_ratio:g})")
        if delta_e00 is not None and delta_e00 > bars.max_delta_e00:
            reasons.append(f"colour cast (mean ΔE00 {delta_e00:.2f} > {bars.max_delta_e00:g})")
        if shifts is not None and float(shifts.max()) > bars.max_mean_shift:
            c = int(shifts.argmax())
            signed = (out[:, :, c].mean() - ref[:, :, c].mean()) / peak
            reasons.append(f"colour shift ({_CHANNEL[c]} mean {signed:+.3f}, bar ±{bars.max_mean_shift:g})")
    return {"std_ratio": round(ratio, 4), "mean_shift": None if shifts is None else round(float(shifts.max()), 5),
            "sanity": reasons}


def sanity_failures(rows: list[dict]) -> list[tuple[str, str]]:
    """(image, reason) of every failed sanity check in per-image rows (rows without the keys pass)."""
    return [(r["image"], reason) for r in rows for reason in (r.get("sanity") or [])]


def sanity_summary(rows: list[dict]) -> dict:
    """Over the per-image rows: the extremes of the sanity values and the verdict, as metrics keys."""
    ratios = [r["std_ratio"] for r in rows if r.get("std_ratio") is not None]
    shifts = [r["mean_shift"] for r in rows if r.get("mean_shift") is not None]
    des = [r["delta_e00"] for r in rows if r.get("delta_e00") is not None]
    fails = sanity_failures(rows)
    return {
        "std_ratio_min": min(ratios) if ratios else None,
        "std_ratio_max": max(ratios) if ratios else None,
        "mean_shift_max": max(shifts) if shifts else None,
        "delta_e00_max": max(des) if des else None,
        "sanity_passed": not fails,
        "sanity_failures": [f"{image}: {reason}" for image, reason in fails],
    }
