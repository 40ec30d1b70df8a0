"""Every membership and cardinality session message survives its protobuf form, bytes
included: the node's adapters add the envelope and nothing else."""
from __future__ import annotations

import pytest

from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.transport import membership_wire as wire
from protocols import cardinality_session as cs
from protocols import membership as ms

E = bytes(range(32))
STREAMS = [
    (wire.evaluate_request, wire.parse_evaluate_request, pb.EvaluateRequest,
     [ms.Header(7), ms.ElementBatch(3, E * 2), ms.ProofRequest(3, (0, 1)), ms.Finish()]),
    (wire.evaluate_response, wire.parse_evaluate_response, pb.EvaluateResponse,
     [ms.Accepted(4096), ms.ElementBatch(0, E), ms.BatchProof(2, E * 2), ms.Summary(7)]),
    (wire.cardinality_request, wire.parse_cardinality_request, pb.CardinalityRequest,
     [cs.Header(12), cs.Open(E, 3), cs.ElementBatch(1, E), cs.Rows(E * 3), cs.Finish()]),
    (wire.cardinality_response, wire.parse_cardinality_response, pb.CardinalityResponse,
     [cs.Accepted(10), cs.Key(E, 40), cs.Rows(E), cs.CountSummary(-3, 21, 500_000)]),
]


@pytest.mark.parametrize("to_pb, parse, kind, messages", STREAMS)
def test_session_messages_round_trip_through_protobuf_bytes(to_pb, parse, kind, messages):
    for message in messages:
        assert parse(kind.FromString(to_pb(message).SerializeToString())) == message


def test_the_envelope_goes_into_the_protobuf_body():
    header = wire.evaluate_request(ms.Header(5), query_id="q", dataset="d", purpose="p",
                                   kind=pb.QUERY_KIND_LABELED, consent_digest="c")
    assert (header.header.query_id, header.header.kind, header.header.total_elements) == ("q", 2, 5)
    summary = wire.cardinality_response(cs.CountSummary(9, 1, 0), query_id="q", receipt=b"r")
    assert summary.summary.receipt == b"r" and summary.summary.count == 9


def test_bodies_a_stream_does_not_carry():
    assert wire.parse_evaluate_request(pb.EvaluateRequest()) is None
    assert wire.parse_cardinality_response(pb.CardinalityResponse()) is None
    with pytest.raises(TypeError):
        wire.evaluate_request(cs.Open(E, 0))  # a cardinality message on the Evaluate stream
    with pytest.raises(TypeError):
        wire.cardinality_response(ms.BatchProof(0, E))
