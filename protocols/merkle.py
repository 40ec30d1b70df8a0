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
"""
from __future__ import annotations

import hashlib
import itertools
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import NamedTuple

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "CompactRange", "Node", "NodeReader", "ProofError",
           "ProofShapeError", "RootMismatchError", "hash_leaf", "hash_children", "root",
           "verify_log", "border_nodes", "inclusion_proof", "root_from_inclusion_proof",
           "verify_inclusion", "consistency_proof", "verify_consistency"]

HASH_SIZE = 32
_sha256 = hashlib.sha256
_LEAF_PREFIX = b"\x00"
_NODE_PREFIX = b"\x01"

EMPTY_ROOT: bytes = _sha256(b"").digest()


def hash_leaf(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one ledger entry."""
    return _sha256(_LEAF_PREFIX + data).digest()


def hash_children(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return _sha256(_NODE_PREFIX + left + right).digest()


class ProofError(ValueError):
    """A proof, root or size that does not check out."""


class ProofShapeError(ProofError):
    """Sizes, index or proof length that no honest proof can have."""


class RootMismatchError(ProofError):
    """The hashes fold to a root other than the one claimed."""

    def __init__(self, what: str, expected: bytes, calculated: bytes) -> None:
        self.expected = expected
        self.calculated = calculated
        super().__init__(f"{what}: calculated {calculated.hex()}, expected {expected.hex()}")


class Node(NamedTuple):
    """Hash of the perfect subtree over leaves [index * 2**level, (index + 1) * 2**level)."""
    level: int
    index: int
    hash: bytes


NodeReader = Callable[[int, int], bytes]
"""get_node(level, index) -> hash of that perfect subtree; level 0 is the leaf hashes."""


def _split(n: int) -> int:
    """The largest power of two strictly below n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def border_nodes(begin: int, end: int | None = None) -> list[tuple[int, int]]:
    """(level, index) of the perfect subtrees that tile [begin, end), biggest first.

    `border_nodes(size)` names the right border of the tree of `size`: what
    `CompactRange.from_store` loads. With `begin` given it must be a multiple of a
    power of two not below end - begin, as in every range RFC 9162 splits a tree into.
    """
    if end is None:
        begin, end = 0, begin
    ids = []
    n = end - begin
    for level in range(n.bit_length() - 1, -1, -1):
        if n >> level & 1:
            ids.append((level, begin >> level))
            begin += 1 << level
    return ids


def _fetch(get_node: NodeReader, level: int, index: int) -> bytes:
    value = get_node(level, index)
    if len(value) != HASH_SIZE:
        raise ValueError(f"node store gave {len(value)} bytes for ({level}, {index})")
    return value


# --- proofs ----------------------------------------------------------------------

def _range_root(begin: int, end: int, get_node: NodeReader) -> bytes:
    """MTH of leaves [begin, end): fold the tiling perfect subtrees from the right."""
    hashes = [_fetch(get_node, level, index) for level, index in border_nodes(begin, end)]
    h = hashes.pop()
    while hashes:
        h = hash_children(hashes.pop(), h)
    return h


def inclusion_proof(index: int, size: int, get_node: NodeReader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf level first, from O(log size)
    perfect subtrees inside [0, size). Raises ProofShapeError: index outside [0, size)."""
    if not 0 <= index < size:
        raise ProofShapeError(f"index {index} is not below tree size {size}")
    proof = []
    begin, end = 0, size
    while end - begin > 1:
        mid = begin + _split(end - begin)
        if index < mid:
            proof.append(_range_root(mid, end, get_node))
            end = mid
        else:
            proof.append(_range_root(begin, mid, get_node))
            begin = mid
    proof.reverse()
    return proof


def consistency_proof(size1: int, size2: int, get_node: NodeReader) -> list[bytes]:
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1, leaf level first, from O(log size2)
    perfect subtrees inside [0, size2). Raises ProofShapeError: size1 == 0 or size1 > size2
    (the verifier refuses both)."""
    if not 0 < size1 <= size2:
        raise ProofShapeError(f"size1 {size1} is not within [1, size2 {size2}]")
    proof = []
    begin, end, whole_old_tree = 0, size2, True
    while size1 != end:
        mid = begin + _split(end - begin)
        if size1 <= mid:
            proof.append(_range_root(mid, end, get_node))
            end = mid
        else:
            proof.append(_range_root(begin, mid, get_node))
            begin, whole_old_tree = mid, False
    if not whole_old_tree:  # the verifier cannot supply this subtree's hash itself
        proof.append(_range_root(begin, end, get_node))
    proof.reverse()
    return proof


# --- building and recomputing roots -----------------------------------------------


class CompactRange:
    """The growing tree as its right border: one perfect-subtree hash per set bit of size."""

    __slots__ = ("_size", "_border")

    def __init__(self) -> None:
        self._size = 0
        self._border: list[bytes] = []  # biggest (leftmost) subtree first

    @classmethod
    def from_store(cls, size: int, get_node: NodeReader) -> CompactRange:
        """Resume at `size` from stored nodes, in O(log size) lookups."""
        if size < 0:
            raise ValueError(f"negative tree size {size}")
        compact = cls()
        compact._size = size
        compact._border = [_fetch(get_node, lv, ix) for lv, ix in border_nodes(size)]
        return compact

    @property
    def size(self) -> int:
        return self._size

    @property
    def border(self) -> tuple[Node, ...]:
        """The right-border nodes, biggest first."""
        ids = border_nodes(self._size)
        return tuple(Node(lv, ix, h) for (lv, ix), h in zip(ids, self._border))

    def append(self, leaf_hash: bytes) -> list[Node]:
        """Add one leaf; return every node it completes, the leaf itself first: what a
        store persists to serve `get_node`."""
        if len(leaf_hash) != HASH_SIZE:
            raise ValueError(f"leaf hash is {len(leaf_hash)} bytes, want {HASH_SIZE}")
        index = self._size
        border = self._border
        h = leaf_hash
        completed = [Node(0, index, h)]
        level = 0
        while index & 1:  # each trailing 1 bit closes a perfect subtree
            h = _sha256(_NODE_PREFIX + border.pop() + h).digest()
            index >>= 1
            level += 1
            completed.append(Node(level, index, h))
        border.append(h)
        self._size += 1
        return completed

    def root(self) -> bytes:
        """MTH of the tree of the current size."""
        return _fold_border(list(self._border))


def _fold_border(border: list[bytes]) -> bytes:
    if not border:
        return EMPTY_ROOT
    h = border.pop()
    while border:
        h = _sha256(_NODE_PREFIX + border.pop() + h).digest()
    return h


def _stream_root(leaf_hashes: Iterable[bytes]) -> tuple[int, bytes]:
    # CompactRange.append without the bookkeeping: a million leaves in well under 2 s.
    sha256, prefix = _sha256, _NODE_PREFIX
    border: list[bytes] = []
    push, pop = border.append, border.pop
    count = 0
    for h in leaf_hashes:
        if len(h) != HASH_SIZE:
            raise ProofShapeError(f"leaf {count} is {len(h)} bytes, want {HASH_SIZE}")
        n = count
        count += 1
        while n & 1:
            h = sha256(prefix + pop() + h).digest()
            n >>= 1
        push(h)
    return count, _fold_border(border)


def root(leaf_hashes: Iterable[bytes]) -> bytes:
    """MTH over leaf hashes, streamed in O(log n) memory (EMPTY_ROOT for none); raises
    ProofShapeError for a leaf hash that is not 32 bytes."""
    return _stream_root(leaf_hashes)[1]


def verify_log(leaf_hashes: Iterable[bytes], expected_size: int, expected_root: bytes) -> None:
    """Check a downloaded log against a published (size, root), in O(log n) memory.

    Reads at most expected_size + 1 leaf hashes, so an endless source fails fast.

    Raises:
        ProofShapeError: the log holds another number of entries, or a leaf hash is
            not 32 bytes.
        RootMismatchError: the entries hash to another root.
    """
    if expected_size < 0:
        raise ProofShapeError(f"negative tree size {expected_size}")
    count, calculated = _stream_root(itertools.islice(leaf_hashes, expected_size + 1))
    if count > expected_size:
        raise ProofShapeError(f"log has more than {expected_size} entries")
    if count < expected_size:
        raise ProofShapeError(f"log has {count} entries, want {expected_size}")
    if calculated != expected_root:
        raise RootMismatchError("log", expected_root, calculated)


# --- verification ----------------------------------------------------------------

def _check_proof_hashes(proof: Sequence[bytes]) -> None:
    for position, element in enumerate(proof):
        if len(element) != HASH_SIZE:
            raise ProofShapeError(f"proof[{position}] is {len(element)} bytes, want {HASH_SIZE}")


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


def root_from_inclusion_proof(leaf_hash: bytes, index: int, size: int,
                              proof: Sequence[bytes]) -> bytes:
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


def verify_inclusion(leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes],
                     root: bytes) -> None:
    """Check that `leaf_hash` is leaf `index` of the tree of `size` with `root`.

    Raises ProofShapeError (see `root_from_inclusion_proof`) or RootMismatchError.
    """
    calculated = root_from_inclusion_proof(leaf_hash, index, size, proof)
    if calculated != root:
        raise RootMismatchError("inclusion proof", root, calculated)


def verify_consistency(size1: int, size2: int, root1: bytes, root2: bytes,
                       proof: Sequence[bytes]) -> None:
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
