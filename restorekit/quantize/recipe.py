"""Quantization recipes as data: a scheme, per-layer overrides, calibration settings.

A recipe says, for every quantizable layer of the PyTorch model (Conv2d, ConvTranspose2d,
Linear), how its weights and activations are stored; overrides go from the global default to
an op type (the module's class name) to an op name (the module's name in
``model.named_modules()``, the same on every target). An override of ``null`` keeps that
layer in float. The same recipe is implemented natively by each target's quantizer
(``quantize/onnx.py``, ``quantize/tflite.py``, ``quantize/coreml.py``) and recorded in the
bundle manifest. Example (YAML)::

    scheme: w8a8
    op_names:
      body.30: {weights: int8, activations: int16}   # 16-bit activations around one layer
      body.0: null                                   # first conv stays float
    calibration: {method: minmax, tiles: 32}
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from restorekit.core.errors import BadInputError
from restorekit.core.files import read_user_text
from restorekit.core.targets import TARGETS

WEIGHTS = ("fp16", "int8", "palette4", "palette6", "palette8")
ACTIVATIONS = ("fp16", "int8", "int16")
CALIBRATION_METHODS = ("minmax", "percentile")
QUANTIZABLE_TYPES = ("Conv2d", "ConvTranspose2d", "Linear")


@dataclass(frozen=True)
class LayerSetting:
    """How one layer is stored: weights and activations (``None`` = float32)."""

    weights: str | None
    activations: str | None = None

    def to_dict(self) -> dict[str, str | None]:
        """The setting as a JSON-ready dict."""
        return {"weights": self.weights, "activations": self.activations}


#: The built-in schemes and the global setting each one applies.
SCHEMES: dict[str, LayerSetting] = {
    "fp16": LayerSetting("fp16", "fp16"),
    "w8": LayerSetting("int8", None),
    "w8a8": LayerSetting("int8", "int8"),
    "w8a16": LayerSetting("int8", "int16"),
    "palettize4": LayerSetting("palette4", None),
    "palettize6": LayerSetting("palette6", None),
    "palettize8": LayerSetting("palette8", None),
    "mixed": LayerSetting("int8", "int8"),  # w8a8, with the most sensitive layers kept in float
}
DEFAULT_BUDGET_PSNR = 45.0
#: Range-equalization strength of the float preparation (recipe key ``equalization_alpha``): 0.8
#: gives Real-ESRGAN Compact's plain w8a8 +1.5 dB mean / +2.7 dB worst over 0.5 on 33 held-out
#: photos (``benchmarks/int8_simulation.py alphas``, docs/experiments/measurement-log.md).
DEFAULT_EQUALIZATION_ALPHA = 0.8
#: ... except for w8a16: with 16-bit activations the weights' rounding dominates, and moving range
#: onto them costs (Compact ONNX w8a16: 58.34 dB at 0.5, 56.61 dB at 0.8, docs/experiments/quantization_bench.md).
A16_EQUALIZATION_ALPHA = 0.5


@dataclass
class Recipe:
    """A quantization recipe; build one with :func:`builtin_recipe` or :func:`load_recipe`."""

    scheme: str
    op_types: dict[str, LayerSetting | None] = field(default_factory=dict)
    op_names: dict[str, LayerSetting | None] = field(default_factory=dict)
    calibration: dict[str, Any] = field(default_factory=lambda: {"method": "minmax", "tiles": 16})
    budget_psnr: float | None = None  # mixed: the fidelity the search must reach on calibration tiles
    float_preparation: bool = True  # range equalization + GPTQ rounding before integer schemes
    finetune: dict[str, Any] | None = None  # quantization-aware fine-tuning (quantize.finetune) settings
    equalization_alpha: float = DEFAULT_EQUALIZATION_ALPHA  # range equalization strength (0: weights' ranges only, 1: activations')
    #: split every other PReLU into a ReLU on doubled channels before int8 (``convert.rewrites.
    #: prelu_to_split_relu``; targets with ``int8_prelu_split``: ONNX)
    split_prelus: bool = False
    #: learned ``{layer: {"input": [lo, hi], "output": [lo, hi]}}`` handed to the quantizer (set by convert)
    activation_ranges: dict[str, dict[str, list[float]]] | None = field(default=None, repr=False, compare=False)
    #: fp16: ``{module label: why}`` whose ops the fp16 safety check keeps in fp32 (``quantize.fp16``; set by convert)
    fp16_keep_float: dict[str, str] | None = field(default=None, repr=False, compare=False)

    @property
    def default(self) -> LayerSetting:
        """The layer setting of this recipe's scheme."""
        return SCHEMES[self.scheme]

    @property
    def integer(self) -> bool:
        """Whether any layer has integer activations (needs calibration images)."""
        settings = [self.default, *self.op_types.values(), *self.op_names.values()]
        return any(s is not None and s.activations in ("int8", "int16") for s in settings)

    def setting(self, name: str, op_type: str) -> LayerSetting | None:
        """The setting of layer ``name`` (a module of class ``op_type``): name > type > default."""
        if name in self.op_names:
            return self.op_names[name]
        if op_type in self.op_types:
            return self.op_types[op_type]
        return self.default

    def float_layers(self, layers: dict[str, str]) -> list[str]:
        """Names of the layers (``{name: op_type}``) this recipe keeps in float."""
        return [n for n, t in layers.items() if self.setting(n, t) is None]

    def to_dict(self) -> dict[str, Any]:
        """The recipe as a JSON-ready dict (recorded in the manifest)."""
        enc = lambda d: {k: (None if v is None else v.to_dict()) for k, v in d.items()}  # noqa: E731
        return {"scheme": self.scheme, "op_types": enc(self.op_types), "op_names": enc(self.op_names),
                "calibration": dict(self.calibration), "budget_psnr": self.budget_psnr,
                "float_preparation": self.float_preparation, "finetune": self.finetune,
                "equalization_alpha": self.equalization_alpha, "split_prelus": self.split_prelus}

    def check(self, target: str, layers: dict[str, str] | None = None) -> "Recipe":
        """Reject a recipe the target cannot implement, or that names a layer the model lacks."""
        if self.scheme not in TARGETS[target].schemes:
            raise BadInputError(f"{target} does not implement scheme {self.scheme!r}: choose from "
                                f"{', '.join(TARGETS[target].schemes)}")
        if target == "coreml" and (self.op_names or self.op_types):
            raise BadInputError("per-layer overrides are implemented for onnx and tflite; Core ML recipes are global")
        for where, table in (("op_types", self.op_types), ("op_names", self.op_names)):
            for key, s in table.items():
                if s is None:
                    continue
                if target == "coreml" and s.activations in ("int8", "int16"):
                    raise BadInputError(f"recipe {where}.{key}: Core ML activation quantization is global "
                                        "(scheme w8a8), not per layer")
                if target != "coreml" and s.weights and s.weights.startswith("palette"):
                    raise BadInputError(f"recipe {where}.{key}: palettized weights are a Core ML format; "
                                        f"{target} takes fp16 or int8 weights")
        if layers is not None:
            unknown = [n for n in self.op_names if n not in layers]
            if unknown:
                shown = ", ".join(list(layers)[:12]) + (", ..." if len(layers) > 12 else "")
                raise BadInputError(f"recipe names unknown op {unknown[0]!r}: this model's quantizable layers are {shown}")
        return self


def _setting(value: Any, where: str) -> LayerSetting | None:
    if value is None:
        return None
    if not isinstance(value, dict):
        raise BadInputError(f"recipe {where}: expected a mapping with weights/activations or null, got {value!r}")
    extra = set(value) - {"weights", "activations"}
    if extra:
        raise BadInputError(f"recipe {where}: unknown key {sorted(map(str, extra))[0]!r} (use weights, activations)")
    w, a = value.get("weights"), value.get("activations")
    if w is not None and (not isinstance(w, str) or w not in WEIGHTS):
        raise BadInputError(f"recipe {where}: unknown weights {w!r}: choose from {', '.join(WEIGHTS)} or null")
    if a is not None and (not isinstance(a, str) or a not in ACTIVATIONS):
        raise BadInputError(f"recipe {where}: unknown activations {a!r}: choose from {', '.join(ACTIVATIONS)} or null")
    if w is None and a is not None:
        raise BadInputError(f"recipe {where}: activations {a} with float weights is contradictory "
                            "(quantized activations need quantized weights; use null to keep the layer float)")
    if a == "fp16" and w != "fp16":
        raise BadInputError(f"recipe {where}: fp16 activations go with fp16 weights, not {w}")
    if w == "fp16" and a in ("int8", "int16"):
        raise BadInputError(f"recipe {where}: fp16 weights with {a} activations is contradictory")
    if w and w.startswith("palette") and a is not None:
        raise BadInputError(f"recipe {where}: palettized weights are weight-only (activations must be null)")
    return LayerSetting(w, a)


def recipe_from_dict(d: dict[str, Any]) -> Recipe:
    """Build and check a recipe from its dict form (as written to YAML/JSON and manifests)."""
    if not isinstance(d, dict):
        raise BadInputError("a recipe must be a mapping with at least 'scheme'")
    unknown = set(d) - {"scheme", "op_types", "op_names", "calibration", "budget_psnr", "float_preparation", "finetune",
                        "equalization_alpha", "split_prelus"}
    if unknown:
        raise BadInputError(f"recipe has unknown key {sorted(map(str, unknown))[0]!r}")
    scheme = d.get("scheme")
    if not isinstance(scheme, str) or scheme not in SCHEMES:
        raise BadInputError(f"recipe scheme {scheme!r} is unknown: choose from {', '.join(SCHEMES)}")
    op_types = {}
    for k, v in _mapping(d, "op_types").items():
        if not isinstance(k, str) or k not in QUANTIZABLE_TYPES:
            raise BadInputError(f"recipe op_types: unknown op type {k!r}: choose from {', '.join(QUANTIZABLE_TYPES)}")
        op_types[k] = _setting(v, f"op_types.{k}")
    op_names = {str(k): _setting(v, f"op_names.{k}") for k, v in _mapping(d, "op_names").items()}
    calib = {"method": "minmax", "tiles": 16, **_mapping(d, "calibration")}
    if set(calib) - {"method", "tiles", "percentile"}:
        raise BadInputError(f"recipe calibration: unknown key {sorted(map(str, set(calib) - {'method', 'tiles', 'percentile'}))[0]!r}")
    if not isinstance(calib["method"], str) or calib["method"] not in CALIBRATION_METHODS:
        raise BadInputError(f"recipe calibration method {calib['method']!r}: choose from {', '.join(CALIBRATION_METHODS)}")
    if not isinstance(calib["tiles"], int) or isinstance(calib["tiles"], bool) or calib["tiles"] < 1:
        raise BadInputError(f"recipe calibration tiles must be a positive integer, got {calib['tiles']!r}")
    budget = d.get("budget_psnr")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, float))
                               or not math.isfinite(budget) or budget <= 0):
        raise BadInputError(f"recipe budget_psnr must be a positive number of dB, got {budget!r}")
    if not isinstance(d.get("float_preparation", True), bool):
        raise BadInputError(f"recipe float_preparation: expected true or false, got {d['float_preparation']!r}")
    if budget is not None and scheme != "mixed":
        raise BadInputError(f"recipe budget_psnr applies to scheme mixed, not {scheme}")
    if scheme == "mixed" and budget is None:
        budget = DEFAULT_BUDGET_PSNR
    if scheme in ("fp16",) or scheme.startswith("palettize") or scheme == "w8":
        if any(s is not None and s.activations in ("int8", "int16") for s in [*op_types.values(), *op_names.values()]):
            raise BadInputError(f"recipe scheme {scheme} has no calibrated activations; an override asks for "
                                "integer activations (start from w8a8 or w8a16)")
    finetune = _finetune(d.get("finetune"), scheme, bool(d.get("float_preparation", True)))
    alpha = _equalization_alpha(d, bool(d.get("float_preparation", True)), scheme)
    split = d.get("split_prelus", False)
    if not isinstance(split, bool):
        raise BadInputError(f"recipe split_prelus: expected true or false, got {split!r}")
    if split and (SCHEMES[scheme].activations != "int8" or not d.get("float_preparation", True)):
        raise BadInputError(f"recipe split_prelus is an int8-activation rewrite made with the float preparation; "
                            f"scheme {scheme}" + ("" if SCHEMES[scheme].activations == "int8" else
                                                  f" has {SCHEMES[scheme].activations or 'float'} activations")
                            + (" with float_preparation: false" if SCHEMES[scheme].activations == "int8" else ""))
    return Recipe(scheme, op_types, op_names, calib, None if budget is None else float(budget),
                  bool(d.get("float_preparation", True)), finetune, alpha, split)


def _mapping(d: dict[str, Any], key: str) -> dict:
    """``d[key]`` as a mapping (absent or null: empty); anything else is refused naming the key."""
    value = d.get(key) or {}
    if not isinstance(value, dict):
        raise BadInputError(f"recipe {key} must be a mapping, got {value!r}")
    return value


def _equalization_alpha(d: dict[str, Any], float_preparation: bool, scheme: str) -> float:
    """``equalization_alpha``: a number in [0, 1], only with the float preparation (default:
    :data:`A16_EQUALIZATION_ALPHA` for w8a16, :data:`DEFAULT_EQUALIZATION_ALPHA` otherwise)."""
    if "equalization_alpha" not in d or d["equalization_alpha"] is None:
        return A16_EQUALIZATION_ALPHA if scheme == "w8a16" else DEFAULT_EQUALIZATION_ALPHA
    value = d["equalization_alpha"]
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
        raise BadInputError(f"recipe equalization_alpha must be a number from 0 to 1, got {value!r}")
    if not float_preparation:
        raise BadInputError("recipe equalization_alpha is part of the float preparation: it cannot go with "
                            "float_preparation: false")
    return float(value)


FINETUNE_KEYS = {"steps": int, "lr": float, "range_lr": float, "crop": int, "batch": int, "seed": int,
                 "below_psnr": float,  # fine-tune only when plain w8a8 simulates below this (dB)
                 "range_margin": float,  # widen the learned ranges by this factor (>= 1) after training
                 "augment": float,  # probability of each photometric change to a training crop (0 to 1)
                 # one learned grid for a conv output and the PReLU after it, where the target keeps
                 # the PReLU in float (ONNX); true or false
                 "tie_prelu_grids": bool}
#: The ``int8`` precision of ``bundle`` / ``convert``: w8a8, fine-tuned when plain post-training
#: quantization simulates below 45 dB on the calibration tiles (Real-ESRGAN Compact: 42.8 dB plain;
#: the built-in model: 55.6 dB plain, no fine-tuning), on training crops made grayscale and raised
#: in contrast with probability 0.75 each, with each PReLU's output on its conv output's grid where
#: the target keeps the PReLU in float (ONNX). Compact's int8 ONNX bundle from ``bundle`` on 33
#: held-out photos (mean / worst, the worst a hard black-and-white scan): 46.85 / 37.84 dB without
#: augmentation, 46.00 / 41.51 dB with it (docs/experiments/measurement-log.md, "Augmentation becomes
#: bundle's default"), 46.19 / 41.98 dB with the tied grids too ("One grid per PReLU").
INT8_FINETUNE = {"steps": 1200, "below_psnr": 45.0, "augment": 0.75, "tie_prelu_grids": True}
#: ... and with every other PReLU split into a ReLU on doubled channels where the target runs that as
#: fused int8 conv + ReLU (ONNX; ``Recipe.split_prelus``; docs/experiments/measurement-log.md, "Split PReLUs").
INT8_SPLIT_PRELUS = True


def _finetune(value: Any, scheme: str, float_preparation: bool) -> dict[str, Any] | None:
    """Checked ``finetune`` settings: int8-activation schemes only, known keys, positive steps."""
    if value is None or value is False:
        return None
    if value is True:
        value = {}
    if not isinstance(value, dict):
        raise BadInputError(f"recipe finetune: expected a mapping ({', '.join(FINETUNE_KEYS)}), got {value!r}")
    if SCHEMES[scheme].activations != "int8":
        raise BadInputError(f"recipe finetune trains for int8 activations; scheme {scheme} has "
                            f"{SCHEMES[scheme].activations or 'float'} activations")
    if not float_preparation:
        raise BadInputError("recipe finetune is part of the float preparation: it cannot go with float_preparation: false")
    out = {}
    for k, v in value.items():
        if k not in FINETUNE_KEYS:
            raise BadInputError(f"recipe finetune: unknown key {k!r}: choose from {', '.join(FINETUNE_KEYS)}")
        if FINETUNE_KEYS[k] is bool:
            if not isinstance(v, bool):
                raise BadInputError(f"recipe finetune.{k}: expected true or false, got {v!r}")
            out[k] = v
            continue
        try:
            out[k] = FINETUNE_KEYS[k](v)
        except (TypeError, ValueError, OverflowError):
            raise BadInputError(f"recipe finetune.{k}: expected a number, got {v!r}") from None
        if not math.isfinite(out[k]):
            raise BadInputError(f"recipe finetune.{k} must be a finite number, got {v!r}")
        if out[k] < 0 or (out[k] == 0 and k not in ("seed", "range_lr", "augment")):
            raise BadInputError(f"recipe finetune.{k} must be positive, got {v!r}")
        if k == "range_margin" and out[k] < 1.0:
            raise BadInputError(f"recipe finetune.range_margin widens the learned ranges: it must be 1 or more, got {v!r}")
        if k == "augment" and out[k] > 1.0:
            raise BadInputError(f"recipe finetune.augment is a probability: it must be from 0 to 1, got {v!r}")
    return out


def int8_finetune(mode: str, range_margin: float = 1.0, augment: float | None = None) -> dict[str, Any] | None:
    """The ``int8`` precision's fine-tune settings from ``--int8-finetune``, ``--int8-range-margin``, ``--int8-augment``.

    ``mode`` is ``auto`` (:data:`INT8_FINETUNE`: fine-tune where plain w8a8 simulates below its
    ``below_psnr``), ``off`` (None) or a step count (the same training, that many steps, always);
    ``range_margin`` (1: none) and ``augment`` (None: the default's) join the settings, which are
    then checked like a recipe's ``finetune``.
    """
    if not math.isfinite(range_margin):
        raise BadInputError(f"--int8-range-margin must be a finite number, not {range_margin}")
    if augment is not None and not 0.0 <= augment <= 1.0:  # also NaN
        raise BadInputError(f"--int8-augment is a probability from 0 to 1, not {augment}")
    extra = {**({"range_margin": range_margin} if range_margin != 1.0 else {}),
             **({"augment": augment} if augment is not None else {})}
    if mode == "off":
        changes = [f for f, k in (("--int8-range-margin", "range_margin"), ("--int8-augment", "augment")) if extra.get(k)]
        if changes:  # a setting that would change a training that does not run
            verb = "set" if len(changes) > 1 else "sets"
            raise BadInputError(f"{' and '.join(changes)} {verb} how fine-tuning runs: it needs --int8-finetune "
                                "auto or a number of steps, not off")
        return None
    if mode == "auto":
        settings = {**INT8_FINETUNE, **extra}
    elif mode.isdigit() and int(mode) > 0:  # that many steps, whatever plain w8a8 gives
        settings = {**{k: v for k, v in INT8_FINETUNE.items() if k != "below_psnr"}, "steps": int(mode), **extra}
    else:
        raise BadInputError(f"--int8-finetune takes auto, off or a positive number of steps, not {mode!r}")
    return _finetune(settings, "w8a8", True)


def command_recipe(target: str, scheme: str = "w8a8", path: str | Path | None = None, budget_psnr: float | None = None,
                   calib_count: int | None = None, finetune_steps: int | None = None) -> Recipe:
    """The recipe of ``restorekit quantize``: a recipe file (else a built-in scheme) with the
    command's overrides, checked for ``target``."""
    if path is not None:
        recipe = load_recipe(path)
        if budget_psnr is not None:
            recipe = recipe_from_dict({**recipe.to_dict(), "budget_psnr": budget_psnr})
    else:
        if scheme not in SCHEMES:
            raise BadInputError(f"unknown scheme {scheme!r}: choose from {', '.join(SCHEMES)}")
        recipe = builtin_recipe(scheme, budget_psnr)
    if calib_count is not None:
        recipe.calibration["tiles"] = calib_count
    if finetune_steps is not None:
        recipe = recipe_from_dict({**recipe.to_dict(), "finetune": {**(recipe.finetune or {}), "steps": finetune_steps}})
    if target not in TARGETS:
        raise BadInputError(f"unknown target {target!r}: choose from {', '.join(TARGETS)}")
    return recipe.check(target)


def builtin_recipe(scheme: str, budget_psnr: float | None = None) -> Recipe:
    """The recipe of a built-in scheme (``mixed`` with its fidelity budget)."""
    return recipe_from_dict({"scheme": scheme, **({"budget_psnr": budget_psnr} if budget_psnr is not None else {})})


def load_recipe(path: str | Path) -> Recipe:
    """Read a recipe from a ``.yaml``/``.yml`` or ``.json`` file."""
    path = Path(path)
    if not path.is_file():
        raise BadInputError(f"recipe file not found: {path}")
    text = read_user_text(path, "recipe file")
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:
        raise BadInputError(f"cannot parse recipe {path.name}: {str(exc).splitlines()[0]}") from exc
    return recipe_from_dict(data)


def quantizable_layers(model) -> dict[str, str]:
    """``{module name: op type}`` of the layers a recipe can address, in definition order."""
    return {n: type(m).__name__ for n, m in model.named_modules() if type(m).__name__ in QUANTIZABLE_TYPES}


def call_order(model, x) -> list[tuple[str, str]]:
    """(name, op type) of the quantizable layers in the order one forward pass on ``x`` calls them."""
    import torch

    order = []
    handles = [m.register_forward_hook(lambda _m, _i, _o, n=n, t=type(m).__name__: order.append((n, t)))
               for n, m in model.named_modules() if type(m).__name__ in QUANTIZABLE_TYPES]
    try:
        with torch.inference_mode():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return order
