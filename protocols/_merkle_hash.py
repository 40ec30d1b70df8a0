"""The Merkle tree's hashing and shapes (RFC 9162 §2.1): hashes, errors, node addresses.

Private to :mod:`protocols.merkle`, which documents the tree and is the module to import.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import NamedTuple

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
        super().__init__(
            f"{what}: calculated {calculated.hex()}, expected {expected.hex()}"
        )


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
