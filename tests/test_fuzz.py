"""Seeded mutation fuzzing of the readers of untrusted input: the image reader, the manifest reader,
the gate-policy parser and the recipe parser. The only exception allowed out of them is a
RestorekitError (one line to the user, exit 2); anything else — a KeyError, a TypeError, an
OpenCV assertion, a MemoryError — is a failure naming the input that caused it.

Not coverage-guided (atheris is not a dependency): each target gets FUZZ_CASES mutants of its seed
corpus (bit flips, truncations, splices, inserted bytes; for structured inputs, values replaced by
values of other JSON types at random paths), deterministic per seed, a few seconds in all.
``RESTOREKIT_FUZZ_CASES`` runs a longer campaign (docs/security.md).
"""

from __future__ import annotations

import copy
import json
import os
import random
import struct
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest

from restorekit.core.errors import RestorekitError

FUZZ_CASES = int(os.environ.get("RESTOREKIT_FUZZ_CASES", "300"))
ROOT = Path(__file__).resolve().parents[1]
#: Values of every JSON type (and the awkward numbers) substituted into structured inputs.
ODD_VALUES = [None, True, False, 0, -1, 1, 2**63, -(2**63), 0.5, float("nan"), float("inf"), -float("inf"), "",
              "x", "../../etc/passwd", "[/x]", [], [1, 2], [0, 0], [None], {}, {"a": 1}, "1e309", 1e308]


def _png_claiming(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b""))


def _image_seeds() -> list[bytes]:
    rng = np.random.default_rng(0)
    rgb = (rng.random((12, 17, 3)) * 255).astype(np.uint8)
    seeds = [cv2.imencode(ext, rgb)[1].tobytes() for ext in (".png", ".jpg", ".bmp", ".webp", ".tif")]
    seeds += [cv2.imencode(".png", rgb[:, :, 0])[1].tobytes(),  # gray
              cv2.imencode(".png", np.dstack([rgb, rgb[:, :, :1]]))[1].tobytes(),  # RGBA
              cv2.imencode(".png", rgb.astype(np.uint16) * 257)[1].tobytes(),  # 16-bit
              _png_claiming(60000, 60000), _png_claiming(0, 5)]
    return seeds


def _mutate_bytes(data: bytes, r: random.Random) -> bytes:
    b = bytearray(data)
    for _ in range(r.randint(1, 4)):
        op = r.randrange(5)
        if op == 0 and b:  # flip bits
            i = r.randrange(len(b))
            b[i] ^= 1 << r.randrange(8)
        elif op == 1 and b:  # truncate
            del b[r.randrange(len(b)):]
        elif op == 2:  # insert random bytes
            i = r.randint(0, len(b))
            b[i:i] = bytes(r.randrange(256) for _ in range(r.randint(1, 16)))
        elif op == 3 and len(b) > 8:  # overwrite a header-sized integer with an extreme one
            i = r.randrange(min(len(b) - 4, 64))
            b[i:i + 4] = r.choice([b"\xff\xff\xff\xff", b"\x00\x00\x00\x00", b"\x7f\xff\xff\xff", b"\x00\x01\x00\x00"])
        elif b:  # splice a copy of a slice
            i, j = sorted(r.randrange(len(b)) for _ in range(2))
            b[r.randint(0, len(b)):0] = b[i:j]
    return bytes(b)


def _paths(node, prefix=()) -> list[tuple]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, prefix + (k,))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, prefix + (i,))
    return out


def _mutate_tree(tree, r: random.Random):
    tree = copy.deepcopy(tree)
    for _ in range(r.randint(1, 3)):
        path = r.choice(_paths(tree))
        if not path:
            return r.choice(ODD_VALUES)
        parent = tree
        for key in path[:-1]:
            parent = parent[key]
        if isinstance(parent, dict) and r.random() < 0.2:
            del parent[path[-1]]
        else:
            parent[path[-1]] = copy.deepcopy(r.choice(ODD_VALUES))
    return tree


def _survives(fn, case: str) -> None:
    try:
        fn()
    except RestorekitError as exc:
        assert "\n" not in str(exc), f"{case}: a multi-line error: {exc!r}"
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        pytest.fail(f"{case}: {type(exc).__name__}: {exc}")


def test_image_reader_only_raises_bad_input(tmp_path):
    from restorekit.core.image import read_image

    r, seeds = random.Random(1), _image_seeds()
    f = tmp_path / "fuzz.img"
    for k in range(FUZZ_CASES):
        data = _mutate_bytes(r.choice(seeds), r) if k >= len(seeds) else seeds[k]
        f.write_bytes(data)
        _survives(lambda: read_image(f), f"image case {k} ({len(data)} bytes, starts {data[:12]!r})")


def test_manifest_reader_only_raises_bad_input(tmp_path):
    from restorekit.bundle.manifest import MANIFEST_NAME, read_manifest
    from tests.conftest import mark_invalid_on_purpose

    r = random.Random(2)
    seed = json.loads((ROOT / "tests" / "fixtures" / "manifest_v1.json").read_text())
    folder = mark_invalid_on_purpose(tmp_path / "b")
    (folder / "model.onnx").write_bytes(b"not a model")
    for k in range(FUZZ_CASES):
        data = _mutate_tree(seed, r)
        text = json.dumps(data)
        if k % 5 == 0:
            text = _mutate_bytes(text.encode(), r).decode("utf-8", "replace")
        (folder / MANIFEST_NAME).write_text(text)
        _survives(lambda: read_manifest(folder, verify=True), f"manifest case {k}: {text[:300]}")


def test_policy_and_recipe_parsers_only_raise_bad_input(tmp_path):
    import yaml

    from restorekit.eval.gates import load_policy
    from restorekit.quantize.recipe import load_recipe

    r = random.Random(3)
    policy = yaml.safe_load((ROOT / "docs" / "gates.example.yaml").read_text())
    recipe = {"scheme": "w8a8", "op_types": {"Linear": None}, "op_names": {"conv3": {"weights": "int8",
              "activations": "int16"}}, "calibration": {"tiles": 16}, "budget_psnr": 40.0, "float_preparation": True,
              "finetune": {"steps": 10}, "equalization_alpha": 0.5, "split_prelus": False}
    for k in range(FUZZ_CASES):
        for name, seed, load in (("gates.yaml", policy, lambda p: load_policy(p, ["onnx-int8", "m/onnx-int8"])),
                                 ("recipe.yaml", recipe, load_recipe)):
            text = yaml.safe_dump(_mutate_tree(seed, r), allow_unicode=True)
            if k % 5 == 0:
                text = _mutate_bytes(text.encode(), r).decode("utf-8", "replace")
            path = tmp_path / name
            path.write_text(text)
            _survives(lambda: load(path), f"{name} case {k}: {text[:300]}")
