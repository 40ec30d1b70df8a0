"""Merkle tree of the query ledger: RFC 9162 hashing, proofs and their verification.

Every query the node answers lands as one entry in an append-only ledger. The entries
are the leaves of a Merkle tree hashed exactly as RFC 9162 §2.1 (identical to RFC 6962
§2.1)::

    MTH({})       = SHA-256()                          EMPTY_ROOT
    leaf hash     = SHA-256(0x00 || entry)             hash_leaf
    interior node = SHA-256(0x01 || left || right)     hash_children

and a tree of n > 1 leaves splits into the first k leaves and the remaining n - k, k
being the largest power of two below n. The 0x00/0x01 prefixes stop a leaf from
passing for an interior node (second preimage).

Rounds. The ledger publishes (size, root) and answers two questions, each with a list
of hashes ordered from the leaves up:

* inclusion (§2.1.3): "is this leaf at `index` in the tree of `size`?" The prover sends
  `inclusion_proof`; the verifier folds it with the leaf hash in `verify_inclusion`.
* consistency (§2.1.4): "is the tree of `size2` the tree of `size1` with entries only
  appended?" The prover sends `consistency_proof`; the verifier checks it against both
  roots in `verify_consistency`.

Who learns what: a verifier learns sizes and hashes only, never the entry behind any
other leaf. The prover learns which leaf or which earlier size the verifier asks about.

Storage. Node (level, index) is the perfect subtree over leaves
[index * 2**level, (index + 1) * 2**level); level 0 holds the leaf hashes. A store that
keeps every such node (`CompactRange.append` reports each one as it completes) serves
any proof through `get_node(level, index)` in O(log n) lookups, and `CompactRange`
keeps only the O(log n) right-border nodes needed for the next root.

Verification follows transparency-dev/merkle's verifier: the index must be below the
size and the proof exactly as long as the sizes dictate; a consistency proof from the
empty tree is an error (even to the empty tree); equal sizes need an empty proof and
equal roots. Shape problems raise `ProofShapeError` before any hashing, wrong hashes
raise `RootMismatchError`; both are `ProofError`.

This module holds the verifier and is the one to import; the hashing and node addresses
are in `_merkle_hash`, proof generation and root building in `_merkle_tree`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from protocols._merkle_hash import (
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    NodeReader,
    ProofError,
    ProofShapeError,
    RootMismatchError,
    border_nodes,
    hash_children,
    hash_leaf,
)
from protocols._merkle_tree import CompactRange, consistency_proof, inclusion_proof, root, verify_log

__all__ = [
    "EMPTY_ROOT", "HASH_SIZE", "CompactRange", "Node", "NodeReader",
    "ProofError", "ProofShapeError", "RootMismatchError",
    "hash_leaf", "hash_children", "root", "verify_log", "border_nodes",
    "inclusion_proof", "root_from_inclusion_proof", "verify_inclusion",
    "consistency_proof", "verify_consistency",
]  # fmt: skip


# --- verification ---------------------------------------------------------------


def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise ProofShapeError(
                f"proof[{position}] is {len(element)} bytes, want {HASH_SIZE}"
            )


def _inclusion_proof_length(index: int, size: int) -> int:
    # Below the level where the paths to `index` and to the last leaf meet, every
    # level contributes a sibling; above it only left siblings (set bits) do.
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def _consistency_proof_length(size1: int, size2: int) -> int:
    # The suffix of the inclusion proof of leaf size1 - 1 above the perfect subtree
    # that ends at size1, plus that subtree's hash unless it is the whole old tree.
    inner = ((size1 - 1) ^ (size2 - 1)).bit_length()
    border = ((size1 - 1) >> inner).bit_count()
    shift = (size1 & -size1).bit_length() - 1
    seed = 0 if size1 == 1 << shift else 1
    return seed + inner - shift + border


def _sides(fn: int, sn: int) -> Iterator[bool]:
    """For each hash of a proof in turn: is it a left sibling? (RFC 9162 §2.1.3.2 and
    §2.1.4.2 walk `fn` up from the leaf and `sn` up from the last leaf.)

    With the proof's length checked first, the RFC's "sn is 0" failures cannot happen.
    """
    while True:
        left = bool(fn & 1) or fn == sn
        if left:
            while fn and not fn & 1:
                fn >>= 1
                sn >>= 1
        fn >>= 1
        sn >>= 1
        yield left


def root_from_inclusion_proof(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes]
) -> bytes:
    """Fold an inclusion proof into the root it implies (RFC 9162 §2.1.3.2).

    Raises:
        ProofShapeError: index outside [0, size), a leaf hash or proof element that is
            not 32 bytes, or a proof of the wrong length for (index, size).
    """
    if not 0 <= index < size:
        raise ProofShapeError(f"index {index} is not below tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofShapeError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
    want = _inclusion_proof_length(index, size)
    if len(proof) != want:
        raise ProofShapeError(f"inclusion proof has {len(proof)} hashes, want {want}")
    _check_proof_hashes(proof)

    r = leaf_hash
    for p, left in zip(proof, _sides(index, size - 1)):
        r = hash_children(p, r) if left else hash_children(r, p)
    return r


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` with `root`.

    Raises:
        ProofShapeError: see `root_from_inclusion_proof`.
        RootMismatchError: the proof leads to another root.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if calculated != root:
        raise RootMismatchError("inclusion proof", root, calculated)


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree (size2, root2) extends the tree (size1, root1) (RFC 9162 §2.1.4.2).

    Raises:
        ProofShapeError: size1 > size2, size1 == 0, a non-empty proof for equal sizes,
            an empty one for different sizes, a wrong length or a non-32-byte element.
        RootMismatchError: the proof does not lead to root1 or to root2.
    """
    if size1 < 0 or size2 < size1:
        raise ProofShapeError(f"size1 {size1} is not within [0, size2 {size2}]")
    if size1 == 0:
        # Every tree extends the empty one, so such a proof would prove nothing.
        raise ProofShapeError("consistency proof from the empty tree is meaningless")
    if size1 == size2:
        if proof:
            raise ProofShapeError("equal sizes need an empty consistency proof")
        if root1 != root2:
            raise RootMismatchError("equal sizes", root1, root2)
        return
    if not proof:
        raise ProofShapeError("different sizes need a non-empty consistency proof")
    want = _consistency_proof_length(size1, size2)
    if len(proof) != want:
        raise ProofShapeError(f"consistency proof has {len(proof)} hashes, want {want}")
    _check_proof_hashes(proof)

    path = list(proof)
    if size1 & (size1 - 1) == 0:  # the old tree is itself a node of the new one
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c, left in zip(path[1:], _sides(fn, sn)):
        if left:  # on the old tree's border: both roots take it
            fr, sr = hash_children(c, fr), hash_children(c, sr)
        else:
            sr = hash_children(sr, c)
    if fr != root1:
        raise RootMismatchError("consistency proof, old root", root1, fr)
    if sr != root2:
        raise RootMismatchError("consistency proof, new root", root2, sr)
