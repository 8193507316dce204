"""Seeded mutation fuzzing of the readers of untrusted input (tests/fuzz_targets.py): the image
reader, the manifest reader, the gate-policy and recipe parsers, the checkpoint loader. The only
exception allowed out of them is a RestorekitError (one line to the user, exit 2); anything else —
a KeyError, a TypeError, an OpenCV assertion, a MemoryError — is a failure naming the input.

Each target gets FUZZ_CASES mutants of its seed corpus (bit flips, truncations, splices, inserted
bytes; for structured inputs, values replaced by values of other JSON types at random paths),
deterministic per seed, a few seconds in all; ``RESTOREKIT_FUZZ_CASES`` runs a longer campaign.
The coverage-guided fuzzer over the same targets is ``scripts/fuzz.py`` (atheris; docs/security.md).
"""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from tests.fuzz_targets import RECIPE_SEED, TARGETS, manifest_seed, policy_seed, prepare_folder, run_target

FUZZ_CASES = int(os.environ.get("RESTOREKIT_FUZZ_CASES", "300"))
#: Values of every JSON type (and the awkward numbers) substituted into structured inputs.
ODD_VALUES = [None, True, False, 0, -1, 1, 2**63, -(2**63), 0.5, float("nan"), float("inf"), -float("inf"), "",
              "x", "../../etc/passwd", "[/x]", [], [1, 2], [0, 0], [None], {}, {"a": 1}, "1e309", 1e308]


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


def _survives(target: str, data: bytes, folder, case: str) -> None:
    try:
        run_target(TARGETS[target], data, folder)
    except Exception as exc:  # noqa: BLE001 - exactly what the fuzzer looks for
        pytest.fail(f"{target} {case} ({len(data)} bytes, starts {data[:40]!r}): {type(exc).__name__}: {exc}")


def _byte_cases(target: str, r: random.Random):
    """The seeds of ``target`` as they are, then byte mutants of them."""
    seeds = list(TARGETS[target].seeds().values())
    for k in range(FUZZ_CASES):
        yield k, (seeds[k] if k < len(seeds) else _mutate_bytes(r.choice(seeds), r))


@pytest.mark.parametrize("target", ["image", "checkpoint"])
def test_binary_readers_only_raise_bad_input(tmp_path, target):
    if target == "checkpoint":
        pytest.importorskip("torch")
    r = random.Random(1)
    prepare_folder(tmp_path)
    for k, data in _byte_cases(target, r):
        _survives(target, data, tmp_path, f"case {k}")


def test_manifest_reader_only_raises_bad_input(tmp_path):
    from tests.conftest import mark_invalid_on_purpose

    r, seed = random.Random(2), manifest_seed()
    folder = mark_invalid_on_purpose(tmp_path / "b")
    prepare_folder(folder)
    for k, data in _byte_cases("manifest", r):
        if k % 2:  # every other case a structural mutant: values of other types at random paths
            data = json.dumps(_mutate_tree(seed, r)).encode()
        _survives("manifest", data, folder, f"case {k}")


def test_policy_and_recipe_parsers_only_raise_bad_input(tmp_path):
    import yaml

    r = random.Random(3)
    prepare_folder(tmp_path)
    for target, seed in (("policy", policy_seed()), ("recipe", RECIPE_SEED)):
        for k, data in _byte_cases(target, r):
            if k % 2:
                data = yaml.safe_dump(_mutate_tree(seed, r), allow_unicode=True).encode()
            _survives(target, data, tmp_path, f"case {k}")


def test_checked_in_corpus_holds_every_seed():
    """scripts/fuzz.py starts from tests/fuzz_corpus: it must hold each target's seeds (rewrite it
    with ``python scripts/fuzz.py --write-corpus`` when the seeds change)."""
    from tests.fuzz_targets import CORPUS

    for name, target in TARGETS.items():
        assert {p.name for p in (CORPUS / name).iterdir()} == set(target.seeds()), name


def test_a_target_lets_anything_but_a_one_line_refusal_out(tmp_path):
    from restorekit.core.errors import BadInputError
    from tests.fuzz_targets import Target

    def reader(path):
        data = path.read_bytes()
        if data == b"refuse":
            raise BadInputError("not a photo")
        if data == b"two lines":
            raise BadInputError("not\na photo")  # escaped to one line by RestorekitError itself
        raise KeyError(data)

    target = Target("t", reader, dict, lambda data: "x.bin")
    assert run_target(target, b"refuse", tmp_path) == "not a photo"
    assert run_target(target, b"two lines", tmp_path) == "not\\na photo"
    with pytest.raises(KeyError):
        run_target(target, b"other", tmp_path)


def test_user_text_in_an_error_is_escaped_to_one_line(tmp_path):
    """A file name or checkpoint key with a newline or a terminal escape sequence cannot split the
    one-line error or act on the terminal: control characters are written as escapes."""
    from restorekit.core.errors import BadInputError
    from restorekit.core.image import read_image

    with pytest.raises(BadInputError) as exc:
        read_image(tmp_path / "scan\n\x1b[2J.png")
    assert "\n" not in str(exc.value) and "\x1b" not in str(exc.value)
    assert "scan\\n\\x1b[2J.png" in str(exc.value)
