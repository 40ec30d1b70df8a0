"""The prover's side of the Merkle tree: proofs from stored perfect subtrees, the compact
range a growing log keeps, and roots over a stream of leaf hashes.

Private to :mod:`protocols.merkle`, which documents the tree and is the module to import.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from protocols._merkle_hash import (
    _NODE_PREFIX,
    EMPTY_ROOT,
    HASH_SIZE,
    Node,
    NodeReader,
    ProofShapeError,
    RootMismatchError,
    _fetch,
    _sha256,
    _split,
    border_nodes,
    hash_children,
)


def _range_root(begin: int, end: int, get_node: NodeReader) -> bytes:
    """MTH of leaves [begin, end): fold the tiling perfect subtrees from the right."""
    hashes = [_fetch(get_node, level, index) for level, index in border_nodes(begin, end)]
    h = hashes.pop()
    while hashes:
        h = hash_children(hashes.pop(), h)
    return h


def inclusion_proof(index: int, size: int, get_node: NodeReader) -> list[bytes]:
    """PATH(index, D[0:size]) of RFC 9162 §2.1.3.1, leaf level first.

    Asks `get_node` only for perfect subtrees inside [0, size), O(log size) of them.

    Raises:
        ProofShapeError: index outside [0, size).
    """
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
    """PROOF(size1, D[0:size2]) of RFC 9162 §2.1.4.1, leaf level first.

    Asks `get_node` only for perfect subtrees inside [0, size2), O(log size2) of them.

    Raises:
        ProofShapeError: size1 == 0 or size1 > size2 (the verifier refuses both).
    """
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
        """Add one leaf; return every node it completes, the leaf itself first.

        The returned nodes are what a store persists to serve `get_node`.
        """
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
    """MTH over leaf hashes, streamed in O(log n) memory (EMPTY_ROOT for none).

    Raises:
        ProofShapeError: a leaf hash that is not 32 bytes.
    """
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
