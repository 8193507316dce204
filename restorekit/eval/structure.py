"""Structural validation of Core ML bundles (what can be checked without macOS)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from restorekit.bundle.manifest import Manifest
from restorekit.core.errors import require

# Feature (io) and MIL (op) data types are different enums in the Core ML protos.
_IO_FLOAT32 = 65568  # ArrayFeatureType.FLOAT32
_FLOAT16, _FLOAT32 = 10, 11  # MIL_pb2.DataType.FLOAT16 / FLOAT32


def coreml_structure(model_path: Path, manifest: Manifest) -> dict:
    """Check a .mlpackage against its manifest: program type, iOS 17 spec, io names/shapes/dtypes,
    and that the compute precision of the conv ops is the one the bundle claims.

    Returns {"checks": [(name, ok, detail)], "ops": {op: count}, "ok": bool}.
    """
    ct = require("coremltools")
    spec = ct.models.MLModel(str(model_path), skip_model_load=True).get_spec()
    checks: list[tuple[str, bool, str]] = []
    checks.append(("ML program", spec.WhichOneof("Type") == "mlProgram", spec.WhichOneof("Type") or "none"))
    checks.append(("spec version >= 8 (iOS 17)", spec.specificationVersion >= 8, str(spec.specificationVersion)))
    for kind, desc, contract in (("input", spec.description.input, manifest.input),
                                 ("output", spec.description.output, manifest.output)):
        if len(desc) != 1:
            checks.append((f"one {kind}", False, f"{len(desc)} {kind}s"))
            continue
        arr = desc[0].type.multiArrayType
        shape = [int(s) for s in arr.shape]
        checks.append((f"{kind} name", desc[0].name == contract.name, desc[0].name))
        same = len(shape) == len(contract.shape) and all(c is None or int(c) == d for d, c in zip(shape, contract.shape))
        checks.append((f"{kind} shape", same, str(shape)))  # a None in the contract (a detector's priors) takes any size
        checks.append((f"{kind} float32", arr.dataType == _IO_FLOAT32, str(arr.dataType)))
    ops: Counter = Counter()
    conv_dtypes: Counter = Counter()
    for fn in spec.mlProgram.functions.values():
        for op in fn.block_specializations[fn.opset].operations:
            ops[op.type] += 1
            if op.type == "conv":
                conv_dtypes[op.outputs[0].type.tensorType.dataType] += 1
    want = _FLOAT32 if manifest.precision == "fp32" else _FLOAT16  # compressed weights compute in fp16
    if manifest.precision not in ("fp32", "fp16"):  # w8 / palettize: weights stored compressed
        packed = {k: v for k, v in ops.items() if k.startswith("constexpr_")}
        checks.append((f"{manifest.precision} weights compressed", bool(packed),
                       ", ".join(f"{k}x{v}" for k, v in packed.items()) or "no constexpr weight ops"))
    if manifest.precision == "w8a8":  # int8 activations: every conv input passes a quantize/dequantize pair
        n_conv = ops.get("conv", 0)
        checks.append(("w8a8 activations quantized", 0 < n_conv <= min(ops.get("quantize", 0), ops.get("dequantize", 0)),
                       f"quantize x{ops.get('quantize', 0)}, dequantize x{ops.get('dequantize', 0)} for conv x{n_conv}"))
    recipe = getattr(manifest, "recipe", None) or {}
    allowed = {want, _FLOAT32} if manifest.precision == "fp16" and recipe.get("fp16_kept_float") else {want}  # kept fp32
    checks.append((f"conv compute {'fp32' if want == _FLOAT32 else 'fp16'}", bool(conv_dtypes) and set(conv_dtypes) <= allowed,
                   ", ".join(f"{'fp16' if k == _FLOAT16 else 'fp32' if k == _FLOAT32 else k}x{v}"
                             for k, v in conv_dtypes.items())))
    return {"checks": checks, "ops": dict(ops), "ok": all(ok for _, ok, _ in checks)}
