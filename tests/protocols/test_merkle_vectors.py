"""Known-answer tests for protocols.merkle against transparency-dev/merkle's vectors.

Sources, all under ../shared/vectors/merkle/ (see its README.md; Apache-2.0):

* inclusion/**/*.json, consistency/**/*.json: the proof probes of
  transparency-dev/merkle testdata at 417fb0c, written by cmd/proofgen. Base64 hashes;
  each says `wantErr`, and all but the happy paths are tampered (flipped bit, swapped
  roots, trailing or preceding garbage, truncated proof, wrong sizes).
* go_tables/rfc6962_hasher_vectors.json: rfc6962/rfc6962_test.go TestRFC6962Hasher.
* go_tables/reference_tree_8_leaves.json: testonly/constants.go (LeafInputs, NodeHashes,
  RootHashes), the 8-leaf reference tree.
* go_tables/proofgen_tables.json: the inclusion and consistency proof tables of
  cmd/proofgen/main.go over that tree.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from protocols import merkle

from .vectors import vectors_dir

MERKLE = vectors_dir() / "merkle"
INCLUSION = sorted((MERKLE / "inclusion").rglob("*.json"))
CONSISTENCY = sorted((MERKLE / "consistency").rglob("*.json"))


def _load(path: Path) -> dict:
    return json.loads(path.read_text())


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _b64_list(values: list[str] | None) -> list[bytes]:
    # Go marshals a nil proof as null.
    return [_b64(v) for v in values or []]


def _probe_id(path: Path) -> str:
    return str(path.relative_to(MERKLE))


def test_probe_sets_are_all_there() -> None:
    # Guards against a vacuous pass if the vectors move: README counts 98 per folder.
    assert len(INCLUSION) == 98
    assert len(CONSISTENCY) == 98
    for probes in (INCLUSION, CONSISTENCY):
        happy = [p for p in probes if not _load(p)["wantErr"]]
        assert len(happy) == 6


@pytest.mark.parametrize("path", INCLUSION, ids=_probe_id)
def test_inclusion_probe(path: Path) -> None:
    probe = _load(path)
    args = (
        _b64(probe["leafHash"]),
        probe["leafIdx"],
        probe["treeSize"],
        _b64_list(probe["proof"]),
        _b64(probe["root"]),
    )
    if probe["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_inclusion(*args)
    else:
        merkle.verify_inclusion(*args)
        assert merkle.root_from_inclusion_proof(*args[:4]) == args[4]


@pytest.mark.parametrize("path", CONSISTENCY, ids=_probe_id)
def test_consistency_probe(path: Path) -> None:
    probe = _load(path)
    args = (
        probe["size1"],
        probe["size2"],
        _b64(probe["root1"]),
        _b64(probe["root2"]),
        _b64_list(probe["proof"]),
    )
    if probe["wantErr"]:
        with pytest.raises(merkle.ProofError):
            merkle.verify_consistency(*args)
    else:
        merkle.verify_consistency(*args)


# --- go_tables --------------------------------------------------------------------

HASHER = _load(MERKLE / "go_tables" / "rfc6962_hasher_vectors.json")
TREE = _load(MERKLE / "go_tables" / "reference_tree_8_leaves.json")
PROOFGEN = _load(MERKLE / "go_tables" / "proofgen_tables.json")

TREE_LEAVES = [merkle.hash_leaf(bytes.fromhex(d)) for d in TREE["leaf_inputs_hex"]]


def _reference_store() -> dict[tuple[int, int], bytes]:
    compact = merkle.CompactRange()
    store = {}
    for leaf_hash in TREE_LEAVES:
        for level, index, node_hash in compact.append(leaf_hash):
            store[level, index] = node_hash
    return store


STORE = _reference_store()


def _root_of_size(size: int) -> bytes:
    return bytes.fromhex(TREE["root_hashes_by_tree_size"][size])


@pytest.mark.parametrize("vector", HASHER["vectors"], ids=lambda v: v["desc"])
def test_hasher_vector(vector: dict) -> None:
    want = bytes.fromhex(vector["want"])
    if vector["op"] == "empty_root":
        assert merkle.EMPTY_ROOT == want
        assert merkle.root([]) == want
        assert merkle.CompactRange().root() == want
    elif vector["op"] == "hash_leaf":
        assert merkle.hash_leaf(bytes.fromhex(vector["input_hex"])) == want
    elif vector["op"] == "hash_children":
        left, right = bytes.fromhex(vector["left_hex"]), bytes.fromhex(vector["right_hex"])
        assert merkle.hash_children(left, right) == want
    else:
        pytest.fail(f"unknown op {vector['op']!r}")


def test_hasher_property_checks() -> None:
    # The three property_checks listed beside the hasher vectors.
    assert merkle.hash_leaf(b"Hello") != merkle.hash_leaf(b"World")
    h1, h2 = merkle.hash_leaf(b"Hello"), merkle.hash_leaf(b"World")
    assert merkle.hash_children(h1, h2) != merkle.hash_leaf(h1 + h2)
    assert merkle.hash_children(h1, h2) != merkle.hash_children(h2, h1)


@pytest.mark.parametrize("size", range(9))
def test_reference_tree_roots(size: int) -> None:
    want = _root_of_size(size)
    assert merkle.root(TREE_LEAVES[:size]) == want
    compact = merkle.CompactRange()
    for leaf_hash in TREE_LEAVES[:size]:
        compact.append(leaf_hash)
    assert compact.size == size
    assert compact.root() == want
    resumed = merkle.CompactRange.from_store(size, lambda lv, ix: STORE[lv, ix])
    assert resumed.root() == want
    merkle.verify_log(iter(TREE_LEAVES[:size]), size, want)


def test_reference_tree_nodes() -> None:
    want = {
        (level, index): bytes.fromhex(h)
        for level, hashes in enumerate(TREE["node_hashes_by_level"])
        for index, h in enumerate(hashes)
    }
    assert STORE == want


@pytest.mark.parametrize(
    "case", PROOFGEN["inclusion"], ids=lambda c: f"{c['leaf_index']}-of-{c['tree_size']}"
)
def test_inclusion_proof_table(case: dict) -> None:
    index, size = case["leaf_index"], case["tree_size"]
    want = [bytes.fromhex(h) for h in case["proof_hex"]]
    assert merkle.inclusion_proof(index, size, lambda lv, ix: STORE[lv, ix]) == want
    merkle.verify_inclusion(TREE_LEAVES[index], index, size, want, _root_of_size(size))


@pytest.mark.parametrize(
    "case", PROOFGEN["consistency"], ids=lambda c: f"{c['size1']}-to-{c['size2']}"
)
def test_consistency_proof_table(case: dict) -> None:
    size1, size2 = case["size1"], case["size2"]
    want = [bytes.fromhex(h) for h in case["proof_hex"]]
    assert merkle.consistency_proof(size1, size2, lambda lv, ix: STORE[lv, ix]) == want
    merkle.verify_consistency(size1, size2, _root_of_size(size1), _root_of_size(size2), want)
