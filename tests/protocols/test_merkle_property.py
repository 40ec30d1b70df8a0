"""protocols.merkle against a naive recursive reading of RFC 9162 §2.1.

The reference below (MTH, PATH, PROOF/SUBPROOF) is a line-by-line transcription of the
RFC's recursive definitions over raw entries, hashed with hashlib directly; it lives
only here. Production proofs come from a node store filled by CompactRange.append, read
through a get_node that refuses any subtree not complete at the size asked about.
"""

from __future__ import annotations

import functools
import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import merkle

EXHAUSTIVE = 300  # every (index, size) and (size1, size2) pair up to here
FLIP_EVERY_BIT = 16  # every bit of every proof element, leaf and root up to here
MAX_SIZE = 3000  # hypothesis samples pairs up to here, past a few more tree levels
ENTRIES = [b"query %d" % i for i in range(MAX_SIZE)]


# --- the reference: RFC 9162 §2.1.1, §2.1.3.1, §2.1.4.1 ------------------------------


def _largest_power_of_two_below(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


@functools.cache
def ref_mth(lo: int, hi: int) -> bytes:
    """MTH(D[lo:hi])."""
    n = hi - lo
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashlib.sha256(b"\x00" + ENTRIES[lo]).digest()
    k = _largest_power_of_two_below(n)
    return hashlib.sha256(b"\x01" + ref_mth(lo, lo + k) + ref_mth(lo + k, hi)).digest()


def ref_path(m: int, lo: int, hi: int) -> list[bytes]:
    """PATH(m, D[lo:hi])."""
    n = hi - lo
    if n == 1:
        return []
    k = _largest_power_of_two_below(n)
    if m < k:
        return ref_path(m, lo, lo + k) + [ref_mth(lo + k, hi)]
    return ref_path(m - k, lo + k, hi) + [ref_mth(lo, lo + k)]


def ref_subproof(m: int, lo: int, hi: int, b: bool) -> list[bytes]:
    """SUBPROOF(m, D[lo:hi], b)."""
    n = hi - lo
    if m == n:
        return [] if b else [ref_mth(lo, hi)]
    k = _largest_power_of_two_below(n)
    if m <= k:
        return ref_subproof(m, lo, lo + k, b) + [ref_mth(lo + k, hi)]
    return ref_subproof(m - k, lo + k, hi, False) + [ref_mth(lo, lo + k)]


def ref_proof(m: int, n: int) -> list[bytes]:
    """PROOF(m, D[0:n])."""
    return ref_subproof(m, 0, n, True)


# --- production side --------------------------------------------------------------------

LEAVES = [merkle.hash_leaf(e) for e in ENTRIES]


def _build_store() -> dict[tuple[int, int], bytes]:
    compact = merkle.CompactRange()
    store = {}
    for leaf_hash in LEAVES:
        for level, index, node_hash in compact.append(leaf_hash):
            assert (level, index) not in store
            store[level, index] = node_hash
    return store


STORE = _build_store()


class Reader:
    """get_node over STORE that counts lookups and refuses nodes beyond `size`."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.lookups = 0

    def __call__(self, level: int, index: int) -> bytes:
        assert (index + 1) << level <= self.size, f"({level}, {index}) beyond {self.size}"
        self.lookups += 1
        return STORE[level, index]


def _lookup_bound(size: int) -> int:
    return 2 * size.bit_length()


def _flip(value: bytes, bit: int) -> bytes:
    flipped = bytearray(value)
    flipped[bit // 8] ^= 1 << (bit % 8)
    return bytes(flipped)


def _flips(value: bytes) -> list[bytes]:
    return [_flip(value, bit) for bit in range(len(value) * 8)]


def _with(proof: list[bytes], position: int, value: bytes) -> list[bytes]:
    return proof[:position] + [value] + proof[position + 1 :]


# --- roots and the node store ------------------------------------------------------------


def test_roots_match_reference_for_every_size() -> None:
    compact = merkle.CompactRange()
    assert compact.root() == ref_mth(0, 0)
    for size in range(1, EXHAUSTIVE + 1):
        compact.append(LEAVES[size - 1])
        want = ref_mth(0, size)
        assert compact.root() == want
        assert merkle.root(LEAVES[:size]) == want
        merkle.verify_log(iter(LEAVES[:size]), size, want)
        resumed = merkle.CompactRange.from_store(size, Reader(size))
        assert resumed.size == size
        assert resumed.root() == want
        assert resumed.border == compact.border


def test_append_reports_every_perfect_subtree_once() -> None:
    want = {
        (level, index)
        for level in range(MAX_SIZE.bit_length())
        for index in range(MAX_SIZE >> level)
    }
    assert set(STORE) == want
    for (level, index), node_hash in STORE.items():
        assert node_hash == ref_mth(index << level, (index + 1) << level)


def test_resumed_range_keeps_growing_like_the_original() -> None:
    compact = merkle.CompactRange.from_store(77, Reader(77))
    for size in range(78, EXHAUSTIVE + 1):
        completed = compact.append(LEAVES[size - 1])
        assert completed[0] == (0, size - 1, LEAVES[size - 1])
        assert all(STORE[lv, ix] == h for lv, ix, h in completed)
        assert compact.root() == ref_mth(0, size)


# --- inclusion -----------------------------------------------------------------------------


def _check_inclusion(index: int, size: int) -> list[bytes]:
    reader = Reader(size)
    proof = merkle.inclusion_proof(index, size, reader)
    assert proof == ref_path(index, 0, size)
    assert reader.lookups <= _lookup_bound(size)
    merkle.verify_inclusion(LEAVES[index], index, size, proof, ref_mth(0, size))
    return proof


def test_inclusion_every_pair_up_to_exhaustive() -> None:
    for size in range(1, EXHAUSTIVE + 1):
        for index in range(size):
            _check_inclusion(index, size)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))))
def test_inclusion_sampled(case: tuple[int, int]) -> None:
    _check_inclusion(*case)


def _assert_inclusion_tamper_fails(index: int, size: int, proof: list[bytes], bits) -> None:
    root = ref_mth(0, size)
    leaf = LEAVES[index]
    for position, element in enumerate(proof):
        for bad in bits(element):
            with pytest.raises(merkle.RootMismatchError):
                merkle.verify_inclusion(leaf, index, size, _with(proof, position, bad), root)
    for bad in bits(root):
        with pytest.raises(merkle.RootMismatchError):
            merkle.verify_inclusion(leaf, index, size, proof, bad)
    for bad in bits(leaf):
        with pytest.raises(merkle.RootMismatchError):
            merkle.verify_inclusion(bad, index, size, proof, root)


def test_inclusion_every_bit_flip_fails_for_small_sizes() -> None:
    for size in range(1, FLIP_EVERY_BIT + 1):
        for index in range(size):
            proof = _check_inclusion(index, size)
            _assert_inclusion_tamper_fails(index, size, proof, _flips)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(2, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(0, n - 1), st.just(n))),
    st.integers(0, 255),
)
def test_inclusion_bit_flip_sampled(case: tuple[int, int], bit: int) -> None:
    index, size = case
    proof = _check_inclusion(index, size)
    _assert_inclusion_tamper_fails(index, size, proof, lambda v: [_flip(v, bit)])


def test_inclusion_shape_errors() -> None:
    proof = _check_inclusion(5, 13)
    root = ref_mth(0, 13)
    for index, size, bad_proof in [
        (13, 13, proof),  # index == size
        (5, 13, proof[:-1]),
        (5, 13, proof + [proof[0]]),
        (5, 13, [b""] + proof[1:]),  # element of the wrong length
        (0, 0, []),
    ]:
        with pytest.raises(merkle.ProofShapeError):
            merkle.verify_inclusion(LEAVES[5], index, size, bad_proof, root)
    with pytest.raises(merkle.ProofShapeError):
        merkle.verify_inclusion(LEAVES[5][:31], 5, 13, proof, root)
    with pytest.raises(merkle.ProofShapeError):
        merkle.inclusion_proof(13, 13, Reader(13))


# --- consistency -----------------------------------------------------------------------------


def _check_consistency(size1: int, size2: int) -> list[bytes]:
    reader = Reader(size2)
    proof = merkle.consistency_proof(size1, size2, reader)
    assert proof == ref_proof(size1, size2)
    assert reader.lookups <= _lookup_bound(size2)
    merkle.verify_consistency(size1, size2, ref_mth(0, size1), ref_mth(0, size2), proof)
    return proof


def test_consistency_every_pair_up_to_exhaustive() -> None:
    for size2 in range(1, EXHAUSTIVE + 1):
        for size1 in range(1, size2 + 1):
            _check_consistency(size1, size2)


@settings(max_examples=400, deadline=None)
@given(st.integers(1, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))))
def test_consistency_sampled(case: tuple[int, int]) -> None:
    _check_consistency(*case)


def _assert_consistency_tamper_fails(size1: int, size2: int, proof: list[bytes], bits) -> None:
    root1, root2 = ref_mth(0, size1), ref_mth(0, size2)
    for position, element in enumerate(proof):
        for bad in bits(element):
            with pytest.raises(merkle.RootMismatchError):
                merkle.verify_consistency(size1, size2, root1, root2, _with(proof, position, bad))
    for bad in bits(root1):
        with pytest.raises(merkle.RootMismatchError):
            merkle.verify_consistency(size1, size2, bad, root2, proof)
    for bad in bits(root2):
        with pytest.raises(merkle.RootMismatchError):
            merkle.verify_consistency(size1, size2, root1, bad, proof)


def test_consistency_every_bit_flip_fails_for_small_sizes() -> None:
    for size2 in range(1, FLIP_EVERY_BIT + 1):
        for size1 in range(1, size2 + 1):
            proof = _check_consistency(size1, size2)
            _assert_consistency_tamper_fails(size1, size2, proof, _flips)


@settings(max_examples=300, deadline=None)
@given(
    st.integers(2, MAX_SIZE).flatmap(lambda n: st.tuples(st.integers(1, n), st.just(n))),
    st.integers(0, 255),
)
def test_consistency_bit_flip_sampled(case: tuple[int, int], bit: int) -> None:
    size1, size2 = case
    proof = _check_consistency(size1, size2)
    _assert_consistency_tamper_fails(size1, size2, proof, lambda v: [_flip(v, bit)])


def test_consistency_shape_errors() -> None:
    proof = _check_consistency(6, 13)
    root6, root13 = ref_mth(0, 6), ref_mth(0, 13)
    for size1, size2, root1, root2, bad_proof in [
        (0, 13, merkle.EMPTY_ROOT, root13, proof),
        (0, 0, merkle.EMPTY_ROOT, merkle.EMPTY_ROOT, []),  # even empty to empty
        (13, 6, root13, root6, proof),
        (6, 6, root6, root6, proof),
        (6, 13, root6, root13, []),
        (6, 13, root6, root13, proof[:-1]),
        (6, 13, root6, root13, proof + [root13]),
        (6, 13, root6, root13, [b""] + proof[1:]),
    ]:
        with pytest.raises(merkle.ProofShapeError):
            merkle.verify_consistency(size1, size2, root1, root2, bad_proof)
    with pytest.raises(merkle.RootMismatchError):
        merkle.verify_consistency(6, 6, root6, root13, [])
    for size1, size2 in [(0, 5), (6, 5)]:
        with pytest.raises(merkle.ProofShapeError):
            merkle.consistency_proof(size1, size2, Reader(MAX_SIZE))


# --- the auditor's full check ----------------------------------------------------------------


def test_verify_log_rejects_wrong_size_root_and_leaf() -> None:
    root = ref_mth(0, 100)
    merkle.verify_log(iter(LEAVES[:100]), 100, root)
    with pytest.raises(merkle.ProofShapeError):
        merkle.verify_log(iter(LEAVES[:99]), 100, root)
    with pytest.raises(merkle.ProofShapeError):
        merkle.verify_log(iter(LEAVES[:101]), 100, root)
    with pytest.raises(merkle.ProofShapeError):  # stops after size + 1 entries
        merkle.verify_log(itertools.repeat(LEAVES[0]), 100, root)
    with pytest.raises(merkle.ProofShapeError):
        merkle.verify_log(iter(LEAVES[:99] + [b"short"]), 100, root)
    swapped = LEAVES[:100]
    swapped[3], swapped[4] = swapped[4], swapped[3]
    with pytest.raises(merkle.RootMismatchError):
        merkle.verify_log(iter(swapped), 100, root)
    merkle.verify_log(iter([]), 0, merkle.EMPTY_ROOT)
