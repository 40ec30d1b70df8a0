"""Rounds of the statistics streams: a protocol message's bytes cut into chunks.

Every large round of proto/shuqiao/v1/statistics.proto carries one protocol message
(its ``to_bytes()``) as ``StatisticsChunk`` pieces, the last one flagged. Both sides
reassemble a round with :func:`collect`, which refuses a round that is out of turn, too
large or cut short; the caller turns :class:`RoundError` into its own error (a gRPC
refusal at the agency, a PartnerError at the asker).
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

from protocols import labels

from node.rpc.shuqiao.v1 import statistics_pb2 as spb

#: Protocol bytes per chunk: half the default 8 MiB gRPC cap leaves room for framing.
CHUNK_BYTES = 4 * 1024 * 1024


class RoundError(Exception):
    """A round arrived out of turn, over its size limit, or not at all."""


def chunk_size(max_message_bytes: int) -> int:
    return max(64 * 1024, min(CHUNK_BYTES, max_message_bytes // 2))


def chunks(data: bytes, size: int, wrap: Callable[[spb.StatisticsChunk], object]) -> Iterator:
    """``wrap(chunk)`` per piece of ``data``; at least one (an empty round is a round)."""
    view = memoryview(data)
    for start in range(0, max(len(data), 1), size):
        piece = view[start:start + size]
        yield wrap(spb.StatisticsChunk(data=bytes(piece), last=start + size >= len(data)))


def collect(messages: Iterator, body: str, limit: int) -> bytes:
    """Reassemble one round named ``body`` (a oneof field) from ``messages``.

    Raises:
        RoundError: another message came first, more than ``limit`` bytes, or the
            stream ended before the chunk flagged ``last``.
    """
    parts, size = [], 0
    for message in messages:
        if message.WhichOneof("body") != body:
            raise RoundError(f"expected {body} chunks, got {message.WhichOneof('body') or 'nothing'}")
        piece = getattr(message, body)
        size += len(piece.data)
        if size > limit:
            raise RoundError(f"{body} exceeds {limit} bytes")
        parts.append(piece.data)
        if piece.last:
            return b"".join(parts)
    raise RoundError(f"the stream ended before the {body} round was complete")


def expect(messages: Iterator, body: str):
    """The next message, which must be ``body``; returns that field."""
    message = next(messages, None)
    if message is None or message.WhichOneof("body") != body:
        got = ("the end of the stream" if message is None
               else message.WhichOneof("body") or "nothing")
        raise RoundError(f"expected {body}, got {got}")
    return getattr(message, body)


# -- the threshold table's sealed incomes (protocols/labels.py, seal_blobs) -------------


def threshold_table_digest(key_id: bytes, tags, labels) -> bytes:
    """SHA-256 over the key id, the tags and the sealed incomes, in table order (any
    buffers: the asker hashes its memory-mapped copy in place)."""
    h = hashlib.sha256(key_id)
    h.update(tags)
    h.update(labels)
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

