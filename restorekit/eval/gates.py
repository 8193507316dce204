"""Release gates on an eval result: thresholds, a baseline to compare with, and a policy file.

Every failing check is reported (not just the first), one line each, so a CI log says
everything that got worse in one run.
"""

from __future__ import annotations

import fnmatch
import json
import math
from dataclasses import dataclass, fields, replace
from pathlib import Path

from restorekit.core.errors import BadInputError
from restorekit.core.files import read_user_text
from restorekit.eval.sanity import sanity_failures


@dataclass(frozen=True)
class GateFailure:
    """One failed check; ``image`` is set when it concerns one image (else the whole set)."""

    text: str
    image: str | None = None

    def __str__(self) -> str:
        return f"{self.image}: {self.text}" if self.image else self.text


#: Each gate's admissible threshold: (lowest, highest, whole numbers only).
GATE_RANGES = {"min_psnr": (0.0, 1000.0, False), "min_ssim": (-1.0, 1.0, False), "max_nonfinite": (0, 2**62, True),
               "max_delta_e": (0.0, 100.0, False), "max_clipped_new": (0, 2**62, True), "max_drop": (0.0, 1000.0, False)}


@dataclass(frozen=True)
class Gates:
    """Thresholds; ``None`` means "not checked"."""

    min_psnr: float | None = None  # dB, each image and the mean
    min_ssim: float | None = None  # each image and the mean
    max_nonfinite: int | None = None  # NaN/inf values over all images
    max_delta_e: float | None = None  # mean CIEDE2000, each image
    max_clipped_new: int | None = None  # newly clipped pixels over all images
    max_drop: float | None = None  # dB below the baseline, each image and the mean

    def __post_init__(self) -> None:
        """A threshold that is NaN, infinite or out of its range would switch its gate off (every
        comparison with NaN is false) or make it meaningless: refused, naming the gate."""
        for name, (lo, hi, integer) in GATE_RANGES.items():
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or not lo <= v <= hi \
                    or (integer and v != int(v)):
                kind = "a whole number" if integer else "a finite number"
                raise BadInputError(f"gate {name} must be {kind} in [{lo:g}, {hi:g}], got {v!r}")

    def merged(self, other: "Gates") -> "Gates":
        """``self`` with every threshold that ``other`` sets replaced by other's."""
        return replace(self, **{f.name: getattr(other, f.name) for f in fields(other)
                                if getattr(other, f.name) is not None})

    def active(self) -> dict:
        """The gates that are set, by name."""
        return {f.name: getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None}


def _gates_from_dict(d: dict, where: str) -> Gates:
    if not isinstance(d, dict):
        raise BadInputError(f"{where}: thresholds must be a mapping of gate names to numbers")
    known = {f.name for f in fields(Gates)}
    unknown = set(d) - known
    if unknown:
        raise BadInputError(f"{where}: unknown gate(s) {', '.join(sorted(map(str, unknown)))}; known: {', '.join(sorted(known))}")
    if any(isinstance(v, bool) for v in d.values()):
        raise BadInputError(f"{where}: thresholds must be numbers, not true/false")
    try:
        return Gates(**{k: (None if v is None else float(v)) for k, v in d.items()})
    except (TypeError, ValueError) as exc:
        raise BadInputError(f"{where}: thresholds must be numbers ({exc})") from exc
    except BadInputError as exc:
        raise BadInputError(f"{where}: {exc}") from None


def load_policy(path: Path, bundle_names: list[str]) -> Gates:
    """Thresholds for a bundle from a policy file (YAML or JSON).

    The file has ``default:`` thresholds and ``bundles:``, a mapping of glob patterns to
    thresholds; each pattern is matched against every name in ``bundle_names`` (e.g.
    ``onnx-int8`` and ``restorekit-x2/onnx-int8``) and matching entries apply in file order,
    later ones overriding earlier ones::

        default: {min_psnr: 40, max_nonfinite: 0}
        bundles:
          "*-fp32": {min_psnr: 60}
          "onnx-int8": {min_psnr: 45, max_drop: 0.1}
    """
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"policy file not found: {path}")
    text = read_user_text(path, "policy file")
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml and json raise different types
        raise BadInputError(f"policy file {path} is not valid {path.suffix.lstrip('.') or 'YAML'}: "
                            f"{str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict) or not set(data) <= {"default", "bundles"}:
        raise BadInputError(f"policy file {path} must be a mapping with 'default' and/or 'bundles'")
    gates = _gates_from_dict(data.get("default") or {}, f"{path}: default")
    bundles = data.get("bundles") or {}
    if not isinstance(bundles, dict):
        raise BadInputError(f"policy file {path}: 'bundles' must map bundle-name patterns to thresholds")
    for pattern, d in bundles.items():
        if any(fnmatch.fnmatchcase(n, str(pattern)) for n in bundle_names):
            gates = gates.merged(_gates_from_dict(d or {}, f"{path}: bundles[{pattern!r}]"))
    return gates


def load_result(path: Path) -> dict:
    """An eval JSON (``restorekit eval --json``), checked to be one."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"baseline not found: {path}")
    try:
        data = json.loads(read_user_text(path, "baseline"))
    except json.JSONDecodeError as exc:
        raise BadInputError(f"baseline {path} is not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("kind") != "restorekit.eval" or "per_image" not in data:
        raise BadInputError(f"baseline {path} is not a `restorekit eval --json` result")
    return data


def _low(value: float, bound: float) -> bool:
    return not (isinstance(value, (int, float)) and math.isfinite(value)) or value < bound


def check(result: dict, gates: Gates, baseline: dict | None = None, sanity: bool = True) -> list[GateFailure]:
    """Every gate failure of an eval result, one readable line each (empty list: all pass); with
    ``sanity`` (the default, whatever the gates) also every failed output-sanity check of an
    image (``eval.sanity``: non-finite, flat or exploding output, colour cast or shift)."""
    rows, s = result["per_image"], result["summary"]
    fails = [GateFailure(f"sanity: {reason}", image) for image, reason in sanity_failures(rows)] if sanity else []
    if gates.min_psnr is not None:
        fails += [GateFailure(f"PSNR {r['psnr_db']:.2f} dB < {gates.min_psnr:g} dB", r["image"])
                  for r in rows if _low(r["psnr_db"], gates.min_psnr)]
        if _low(s["psnr_db_mean"], gates.min_psnr):
            fails.append(GateFailure(f"mean PSNR {s['psnr_db_mean']:.2f} dB < {gates.min_psnr:g} dB"))
    if gates.min_ssim is not None:
        fails += [GateFailure(f"SSIM {r['ssim']:.4f} < {gates.min_ssim:g}", r["image"])
                  for r in rows if _low(r["ssim"], gates.min_ssim)]
        if _low(s["ssim_mean"], gates.min_ssim):
            fails.append(GateFailure(f"mean SSIM {s['ssim_mean']:.4f} < {gates.min_ssim:g}"))
    if gates.max_delta_e is not None:
        fails += [GateFailure(f"colour difference ΔE00 {r['delta_e00']:.3f} > {gates.max_delta_e:g}", r["image"])
                  for r in rows if r["delta_e00"] is not None and not r["delta_e00"] <= gates.max_delta_e]
        if rows and all(r["delta_e00"] is None for r in rows):  # a gate that checks nothing must not pass
            fails.append(GateFailure(f"max_delta_e {gates.max_delta_e:g}: no image has a colour difference to "
                                     "check (ΔE00 needs RGB outputs)"))
    if gates.max_nonfinite is not None and s["nonfinite"] > gates.max_nonfinite:
        bad = ", ".join(f"{r['image']} ({r['nonfinite']})" for r in rows if r["nonfinite"])
        fails.append(GateFailure(f"{s['nonfinite']} non-finite output values > {gates.max_nonfinite:g}: {bad}"))
    if gates.max_clipped_new is not None and s["clipped_new"] > gates.max_clipped_new:
        bad = ", ".join(f"{r['image']} ({r['clipped_new']})" for r in rows if r["clipped_new"])
        fails.append(GateFailure(f"{s['clipped_new']} newly clipped pixels > {gates.max_clipped_new:g}: {bad}"))
    if baseline is not None:
        fails += _check_baseline(result, baseline, 0.0 if gates.max_drop is None else gates.max_drop)
    return fails


def _check_baseline(result: dict, baseline: dict, max_drop: float) -> list[GateFailure]:
    fails = []
    old = {r["image"]: r for r in baseline["per_image"]}
    common = [r for r in result["per_image"] if r["image"] in old]
    if not common:
        return [GateFailure(f"no image in common with the baseline ({', '.join(sorted(old)) or 'empty'})")]
    missing = sorted(set(old) - {r["image"] for r in result["per_image"]})
    if missing:
        fails.append(GateFailure(f"images of the baseline not evaluated: {', '.join(missing)}"))
    for r in common:
        before, now = old[r["image"]]["psnr_db"], r["psnr_db"]
        if _low(now, before - max_drop):
            fails.append(GateFailure(f"PSNR dropped {before - now:.2f} dB vs baseline "
                                     f"({before:.2f} -> {now:.2f} dB, max drop {max_drop:g})", r["image"]))
    mean_old = sum(old[r["image"]]["psnr_db"] for r in common) / len(common)
    mean_new = sum(r["psnr_db"] for r in common) / len(common)
    if _low(mean_new, mean_old - max_drop):
        fails.append(GateFailure(f"mean PSNR dropped {mean_old - mean_new:.2f} dB vs baseline "
                                 f"({mean_old:.2f} -> {mean_new:.2f} dB over {len(common)} images, max drop {max_drop:g})"))
    return fails
