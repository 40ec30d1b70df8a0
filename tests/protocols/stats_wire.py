"""Test helper: a statistics session's messages through the real protobuf envelopes.

Every message of protocols/session.py is put into its body of
proto/shuqiao/v1/statistics.proto, serialised, parsed and taken out again, so a
two-party run in one process sees exactly what crosses the wire (and a field that
does not exist in the proto fails here). Only the generated message classes are used.
"""
from __future__ import annotations

from dataclasses import asdict

from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from protocols.session import (
    BODIES, AggregateSummary, ElementBatch, Evaluated, Piece, StatisticsAccepted, ThresholdSummary,
)

AGGREGATE = (spb.AggregateRequest, spb.AggregateResponse)
THRESHOLD = (spb.ThresholdRequest, spb.ThresholdResponse)
_BODIES = {StatisticsAccepted: spb.StatisticsAccepted, ElementBatch: spb.StatisticsBatch,
           Evaluated: spb.ThresholdEvaluated, AggregateSummary: spb.AggregateSummary,
           ThresholdSummary: spb.ThresholdSummary}


def to_wire(message, envelope) -> bytes:
    if isinstance(message, Piece):
        body = {message.round: spb.StatisticsChunk(data=message.data, last=message.last)}
    else:
        body = {BODIES[type(message)]: _BODIES[type(message)](**asdict(message))}
    return envelope(**body).SerializeToString()


def from_wire(data: bytes, envelope):
    parsed = envelope.FromString(data)
    name = parsed.WhichOneof("body")
    field = getattr(parsed, name)
    if isinstance(field, spb.StatisticsChunk):
        return Piece(name, field.data, field.last)
    kind = {spb.AggregateSummary: AggregateSummary, spb.ThresholdSummary: ThresholdSummary,
            spb.StatisticsAccepted: StatisticsAccepted, spb.StatisticsBatch: ElementBatch,
            spb.ThresholdEvaluated: Evaluated}[type(field)]
    values = {f: getattr(field, f) for f in kind.__dataclass_fields__}
    return kind(**values)


def over_wire(messages, envelope) -> list:
    """The messages as the other side receives them."""
    return [from_wire(to_wire(m, envelope), envelope) for m in messages]


def run(asker, answerer, kind, *, tamper=None):
    """Run both sessions to the end, every message through the wire.

    ``tamper(direction, message)`` may replace a message in flight (direction
    "request" or "response"); returns the messages seen per direction.
    """
    request_env, response_env = kind
    seen: dict[str, list] = {"request": [], "response": []}
    inbox = {"request": over_wire(asker.start(), request_env),
             "response": over_wire(answerer.start(), response_env)}
    receivers = {"response": (asker, "request", request_env),
                 "request": (answerer, "response", response_env)}
    while inbox["request"] or inbox["response"]:
        for direction in ("response", "request"):
            session, reply, envelope = receivers[direction]
            while inbox[direction]:
                message = inbox[direction].pop(0)
                seen[direction].append(message)
                if tamper is not None:
                    message = tamper(direction, message)
                inbox[reply] += over_wire(session.handle(message), envelope)
    return seen
