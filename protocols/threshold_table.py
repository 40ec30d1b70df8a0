"""The threshold table's format: what an agency publishes for threshold checks.

Per dataset x partner x key epoch the agency publishes its Paillier public key n and,
for every row y with a usable income, in an order that says nothing about its source
(sorted by tag)::

    tag   = F_k(y)[:t]                                  (t = tag_length bytes)
    label = seal_blob(F_k(y), Enc_n(income), context)   (protocols/labels.py)

F_k is RFC 9497's OPRF under the partner's epoch key. A label is the fixed-width
Paillier ciphertext (2 * bytes(n)) sealed with AES-256-GCM under a key derived from the
row's full output, so the fund centre opens exactly the rows whose F_k it obtained by
asking (protocols/threshold_session.py); the context binds a label to its owner,
partner, dataset, epoch and key. The digest (SHA-256 over key id, tags, labels, in
table order) names one table: the asker pins it in its query header, and both sides
check a copy against it.

Who learns what: the fund centre learns the number of rows with a usable income and
nothing per row until it asks; the agency learns when a table is fetched.
Pure: no I/O. The node stores, streams and caches tables (node/).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from protocols import labels
from protocols.threshold import key_id as paillier_key_id
from protocols.threshold import validate_public_key

__all__ = [
    "MAX_TABLE_ROWS", "InvalidTable", "table_digest", "income_label_length",
    "income_label_context", "check_header", "row_slices", "removed_slices", "find_tags",
    "PublishedTable",
]

MAX_TABLE_ROWS = 2**27   # a header announcing more is refused before anything is stored
MIN_TAG_LENGTH, MAX_TAG_LENGTH = 12, 64


class InvalidTable(ValueError):
    """A table header or its rows do not fit the format."""


def table_digest(key_id: bytes, tags, label_bytes) -> bytes:
    """SHA-256 over the key id, the tags and the sealed incomes, in table order (any
    buffers: a memory-mapped copy is hashed in place)."""
    h = hashlib.sha256(key_id)
    h.update(tags)
    h.update(label_bytes)
    return h.digest()


def income_label_length(n: int) -> int:
    """Bytes of one sealed Enc(income) under modulus ``n``: the fixed-width ciphertext
    (2 * bytes(n), 768 for 3072 bits) plus nonce and GCM tag."""
    return 2 * ((n.bit_length() + 7) // 8) + labels.OVERHEAD


def income_label_context(*, owner: str, partner: str, dataset: str, epoch: int,
                         key_id: bytes) -> bytes:
    """Binds a sealed Enc(income) to its owner, partner, epoch and Paillier key (and apart
    from the membership labels, which use the same OPRF outputs under another context).
    Not to the version (0): a refreshed version keeps its kept rows' entries."""
    return labels.label_context(owner=owner, partner=partner,
                                dataset=f"{dataset}/threshold/{key_id.hex()}",
                                version=0, epoch=epoch)


def check_header(n: int, key_id: bytes, *, rows: int, tag_length: int, label_length: int,
                 digest: bytes) -> None:
    """Check an announced table's header before anything of it is stored.

    Raises:
        protocols.threshold.InvalidPublicKey: the modulus is refused.
        InvalidTable: the key id, sizes or digest do not fit the format.
    """
    validate_public_key(n)
    if (key_id != paillier_key_id(n) or not MIN_TAG_LENGTH <= tag_length <= MAX_TAG_LENGTH
            or not 0 < rows <= MAX_TABLE_ROWS or label_length != income_label_length(n)
            or len(digest) != 32):
        raise InvalidTable("malformed threshold table header")


def row_slices(tags: bytes, label_bytes: bytes, tag_length: int, label_length: int,
               size: int) -> Iterator[tuple[bytes, bytes]]:
    """(tags, labels) of whole rows, at most about ``size`` bytes per pair."""
    step = max(1, size // (tag_length + label_length))
    for a in range(0, len(tags) // tag_length, step):
        yield (tags[a * tag_length:(a + step) * tag_length],
               label_bytes[a * label_length:(a + step) * label_length])


def removed_slices(removed: bytes, tag_length: int, size: int) -> Iterator[bytes]:
    """Removed tags in pieces of whole tags, at most ``size`` bytes each."""
    step = max(tag_length, size - size % tag_length)
    for a in range(0, len(removed), step):
        yield removed[a:a + step]


def find_tags(asked: np.ndarray, table: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(found, position) of each asked tag in the sorted table: O(m log n), no re-sort."""
    if len(table) == 0:
        return np.zeros(len(asked), dtype=bool), np.zeros(len(asked), dtype=np.int64)
    pos = np.searchsorted(table, asked).clip(max=len(table) - 1)
    return table[pos] == asked, pos


@dataclass(frozen=True)
class PublishedTable:
    """A fund centre's copy of one table, as its threshold session reads it.

    ``labels`` may be any buffer (the node maps its cached file and never copies it).
    """

    n: int
    key_id: bytes
    epoch: int
    tag_length: int
    label_length: int
    tags: np.ndarray        # S<tag_length>, sorted
    order: np.ndarray       # sorted position -> table row
    labels: memoryview | bytes

    @classmethod
    def from_rows(cls, n: int, key_id: bytes, epoch: int, tag_length: int, label_length: int,
                  tags: bytes, label_bytes: memoryview | bytes) -> PublishedTable:
        """The table from its rows in table order (tags and labels aligned)."""
        arr = np.frombuffer(tags, dtype=f"S{tag_length}")
        if len(label_bytes) != len(arr) * label_length:
            raise InvalidTable("tags and labels do not align")
        order = np.argsort(arr, kind="stable")
        return cls(n, key_id, epoch, tag_length, label_length, arr[order], order,
                   label_bytes)

    def label(self, row: int) -> bytes:
        w = self.label_length
        return bytes(self.labels[row * w:(row + 1) * w])

    def lookup(self, outputs: bytes, width: int) -> dict[int, bytes]:
        """Input index -> sealed label of the row whose tag its output's head matches
        (``outputs``: ``width`` bytes per input)."""
        t = self.tag_length
        heads = b"".join(outputs[i:i + t] for i in range(0, len(outputs), width))
        hit, pos = find_tags(np.frombuffer(heads, dtype=f"S{t}"), self.tags)
        return {i: self.label(int(self.order[pos[i]])) for i in np.flatnonzero(hit).tolist()}
