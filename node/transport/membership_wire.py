"""Membership and cardinality session messages to and from their protobuf form.

The sessions (protocols/membership.py, protocols/cardinality_session.py) hold only the
protocol's values, under the same field names as their protobuf messages. The envelope
the node adds is passed in as keyword fields when a message goes out, and read from the
protobuf message by the adapter when one comes in: the header's query id, dataset,
version, epoch, purpose, kind, predicate and consent digest, the query id of Accepted,
the receipt and ledger key of a summary. A body the stream does not carry (or none)
parses to None, which every session refuses.
"""
from __future__ import annotations

import dataclasses
from functools import partial

from protocols import cardinality_session as cs
from protocols import membership as ms

from node.rpc.shuqiao.v1 import membership_pb2 as pb

# Per stream and direction: (oneof field, session message, protobuf message; bytes for a
# oneof that is a bytes field itself, carrying the message's only field).
_EVALUATE_REQUEST = [("header", ms.Header, pb.QueryHeader), ("batch", ms.ElementBatch, pb.ElementBatch),
                     ("proof_request", ms.ProofRequest, pb.ProofRequest), ("finish", ms.Finish, pb.Finish)]
_EVALUATE_RESPONSE = [("accepted", ms.Accepted, pb.Accepted), ("batch", ms.ElementBatch, pb.ElementBatch),
                      ("proof", ms.BatchProof, pb.BatchProof), ("summary", ms.Summary, pb.QuerySummary)]
_CARDINALITY_REQUEST = [("header", cs.Header, pb.QueryHeader), ("open", cs.Open, pb.CardinalityOpen),
                        ("batch", cs.ElementBatch, pb.ElementBatch), ("rows", cs.Rows, bytes),
                        ("finish", cs.Finish, pb.Finish)]
_CARDINALITY_RESPONSE = [("accepted", cs.Accepted, pb.Accepted), ("key", cs.Key, pb.CardinalityKey),
                         ("rows", cs.Rows, bytes), ("summary", cs.CountSummary, pb.CardinalitySummary)]


def _fields(message) -> dict:
    return {f.name: getattr(message, f.name) for f in dataclasses.fields(message)}


def _to_pb(envelope_type, bodies, message, **envelope):
    """`message` in its stream's envelope; `envelope`: the protobuf body's other fields."""
    for field, kind, body in bodies:
        if type(message) is kind:
            if body is bytes:
                (value,) = _fields(message).values()
                return envelope_type(**{field: value})
            return envelope_type(**{field: body(**_fields(message), **envelope)})
    raise TypeError(f"no protobuf form for {type(message).__name__} on this stream")


def _from_pb(bodies, received) -> object | None:
    field = received.WhichOneof("body")
    for name, kind, body in bodies:
        if name == field:
            value = getattr(received, field)
            if body is bytes:
                return kind(value)
            return kind(**{f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(kind)})
    return None


def _plain(value):
    """Protobuf scalars as they are; a repeated field as a tuple."""
    return value if isinstance(value, (int, bytes, str)) else tuple(value)


evaluate_request = partial(_to_pb, pb.EvaluateRequest, _EVALUATE_REQUEST)
parse_evaluate_request = partial(_from_pb, _EVALUATE_REQUEST)
evaluate_response = partial(_to_pb, pb.EvaluateResponse, _EVALUATE_RESPONSE)
parse_evaluate_response = partial(_from_pb, _EVALUATE_RESPONSE)
cardinality_request = partial(_to_pb, pb.CardinalityRequest, _CARDINALITY_REQUEST)
parse_cardinality_request = partial(_from_pb, _CARDINALITY_REQUEST)
cardinality_response = partial(_to_pb, pb.CardinalityResponse, _CARDINALITY_RESPONSE)
parse_cardinality_response = partial(_from_pb, _CARDINALITY_RESPONSE)
