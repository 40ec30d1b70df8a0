"""The statistics streams' envelopes: protobuf messages to session messages and back.

The aggregate and threshold sessions (protocols/aggregate.py,
protocols/threshold_session.py) speak the plain messages of protocols/session.py, one
type per body of proto/shuqiao/v1/statistics.proto with the same field names; a
large round is a protocol message's bytes cut into ``StatisticsChunk`` pieces. This
module converts between the two, adding only the node's own fields (query id,
receipt), and reassembles a round for callers outside a session (:func:`collect`).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import asdict, fields

from protocols.session import ProtocolStateError
from protocols.session import (
    BODIES, AggregateSummary, ElementBatch, Evaluated, InvalidRound, Piece, Reassembly,
    StatisticsAccepted, ThresholdSummary, Unexpected, chunk_size, split,
)

from node.core.errors import ProtocolViolation
from node.rpc.shuqiao.v1 import statistics_pb2 as spb

__all__ = ["RoundError", "chunk_size", "wrap", "unwrap", "chunks", "collect", "expect"]

_PROTO = {StatisticsAccepted: spb.StatisticsAccepted, ElementBatch: spb.StatisticsBatch,
          Evaluated: spb.ThresholdEvaluated, AggregateSummary: spb.AggregateSummary,
          ThresholdSummary: spb.ThresholdSummary}
_SESSION = {proto: message for message, proto in _PROTO.items()}


class RoundError(ProtocolViolation):
    """A round arrived out of turn, over its size limit, or not at all."""


def wrap(envelope, message, **node_fields):
    """``message`` in its body of ``envelope`` (AggregateRequest, ThresholdResponse, ...);
    ``node_fields`` fill the body's fields that are the node's (query_id, receipt)."""
    if isinstance(message, Piece):
        chunk = spb.StatisticsChunk(data=message.data, last=message.last)
        return envelope(**{message.round: chunk})
    body = _PROTO[type(message)](**asdict(message), **node_fields)
    return envelope(**{BODIES[type(message)]: body})


def unwrap(envelope_message):
    """The session message an envelope carries; a header or an empty body becomes
    :class:`Unexpected`, which every session refuses by name."""
    name = envelope_message.WhichOneof("body")
    if name is None:
        return Unexpected("nothing")
    body = getattr(envelope_message, name)
    if isinstance(body, spb.StatisticsChunk):
        return Piece(name, body.data, body.last)
    kind = _SESSION.get(type(body))
    if kind is None:
        return Unexpected(name)
    return kind(**{f.name: getattr(body, f.name) for f in fields(kind)})


def chunks(data: bytes, size: int, wrap_chunk: Callable[[spb.StatisticsChunk], object]) -> Iterator:
    """``wrap_chunk(chunk)`` per piece of ``data``; at least one (an empty round is a round)."""
    for piece in split("", data, size):
        yield wrap_chunk(spb.StatisticsChunk(data=piece.data, last=piece.last))


def collect(messages: Iterator, body: str, limit: int) -> bytes:
    """Reassemble one round named ``body`` (a oneof field) from ``messages``.

    Raises:
        RoundError: another message came first, more than ``limit`` bytes, or the
            stream ended before the chunk flagged ``last``.
    """
    round_ = Reassembly(body, limit)
    for message in messages:
        try:
            data = round_.add(unwrap(message))
        except (ProtocolStateError, InvalidRound) as exc:
            raise RoundError(str(exc)) from None
        if data is not None:
            return data
    raise RoundError(str(round_.cut_short()))


def expect(messages: Iterator, body: str):
    """The next message, which must be ``body``; returns that field."""
    message = next(messages, None)
    if message is None or message.WhichOneof("body") != body:
        got = ("the end of the stream" if message is None
               else message.WhichOneof("body") or "nothing")
        raise RoundError(f"expected {body}, got {got}")
    return getattr(message, body)
