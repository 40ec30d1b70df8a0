"""Membership and cardinality session messages to and from their protobuf form.

The sessions (protocols/membership.py, protocols/cardinality_session.py) hold only the
protocol's values. The envelope the node adds is passed in as keyword fields when a
message goes out, and read from the protobuf message by the adapter when one comes in:
the header's query id, dataset, version, epoch, purpose, kind, predicate and consent
digest, the query id of Accepted, the receipt and ledger key of a summary. A body the
stream does not carry (or none) parses to None, which every session refuses.
"""
from __future__ import annotations

from protocols import cardinality_session as cs
from protocols import membership as ms

from node.rpc.shuqiao.v1 import membership_pb2 as pb


def _unknown(message: object) -> TypeError:
    return TypeError(f"no protobuf form for {type(message).__name__} on this stream")


def _batch(message) -> pb.ElementBatch:
    return pb.ElementBatch(seq=message.seq, elements=message.elements)


# -- Evaluate (membership) --------------------------------------------------------------------

def evaluate_request(message: object, **envelope) -> pb.EvaluateRequest:
    """Asker -> answerer; `envelope`: the QueryHeader's other fields."""
    if isinstance(message, ms.Header):
        return pb.EvaluateRequest(header=pb.QueryHeader(total_elements=message.total_elements,
                                                        **envelope))
    if isinstance(message, ms.ElementBatch):
        return pb.EvaluateRequest(batch=_batch(message))
    if isinstance(message, ms.ProofRequest):
        return pb.EvaluateRequest(proof_request=pb.ProofRequest(seq=message.seq,
                                                                indices=message.indices))
    if isinstance(message, ms.Finish):
        return pb.EvaluateRequest(finish=pb.Finish())
    raise _unknown(message)


def parse_evaluate_request(request: pb.EvaluateRequest) -> object | None:
    body = request.WhichOneof("body")
    if body == "header":
        return ms.Header(request.header.total_elements)
    if body == "batch":
        return ms.ElementBatch(request.batch.seq, request.batch.elements)
    if body == "proof_request":
        return ms.ProofRequest(request.proof_request.seq, tuple(request.proof_request.indices))
    return ms.Finish() if body == "finish" else None


def evaluate_response(message: object, **envelope) -> pb.EvaluateResponse:
    """Answerer -> asker; `envelope`: query_id (Accepted, Summary), receipt and
    ledger_public_key (Summary)."""
    if isinstance(message, ms.Accepted):
        return pb.EvaluateResponse(accepted=pb.Accepted(
            max_batch_elements=message.max_batch_elements, **envelope))
    if isinstance(message, ms.ElementBatch):
        return pb.EvaluateResponse(batch=_batch(message))
    if isinstance(message, ms.BatchProof):
        return pb.EvaluateResponse(proof=pb.BatchProof(seq=message.seq, proof=message.proof))
    if isinstance(message, ms.Summary):
        return pb.EvaluateResponse(summary=pb.QuerySummary(
            elements_evaluated=message.elements_evaluated, **envelope))
    raise _unknown(message)


def parse_evaluate_response(response: pb.EvaluateResponse) -> object | None:
    body = response.WhichOneof("body")
    if body == "accepted":
        return ms.Accepted(response.accepted.max_batch_elements)
    if body == "batch":
        return ms.ElementBatch(response.batch.seq, response.batch.elements)
    if body == "proof":
        return ms.BatchProof(response.proof.seq, response.proof.proof)
    if body == "summary":
        return ms.Summary(response.summary.elements_evaluated)
    return None


# -- Cardinality ------------------------------------------------------------------------------

def cardinality_request(message: object, **envelope) -> pb.CardinalityRequest:
    """Fund centre -> agency; `envelope`: the QueryHeader's other fields."""
    if isinstance(message, cs.Header):
        return pb.CardinalityRequest(header=pb.QueryHeader(
            total_elements=message.total_elements, kind=pb.QUERY_KIND_CARDINALITY, **envelope))
    if isinstance(message, cs.Open):
        return pb.CardinalityRequest(open=pb.CardinalityOpen(point=message.point,
                                                             padding=message.padding))
    if isinstance(message, cs.ElementBatch):
        return pb.CardinalityRequest(batch=_batch(message))
    if isinstance(message, cs.Rows):
        return pb.CardinalityRequest(rows=message.elements)
    if isinstance(message, cs.Finish):
        return pb.CardinalityRequest(finish=pb.Finish())
    raise _unknown(message)


def parse_cardinality_request(request: pb.CardinalityRequest) -> object | None:
    body = request.WhichOneof("body")
    if body == "header":
        return cs.Header(request.header.total_elements)
    if body == "open":
        return cs.Open(request.open.point, request.open.padding)
    if body == "batch":
        return cs.ElementBatch(request.batch.seq, request.batch.elements)
    if body == "rows":
        return cs.Rows(request.rows)
    return cs.Finish() if body == "finish" else None


def cardinality_response(message: object, **envelope) -> pb.CardinalityResponse:
    """Agency -> fund centre; `envelope` as for evaluate_response."""
    if isinstance(message, cs.Accepted):
        return pb.CardinalityResponse(accepted=pb.Accepted(
            max_batch_elements=message.max_batch_elements, **envelope))
    if isinstance(message, cs.Key):
        return pb.CardinalityResponse(key=pb.CardinalityKey(key=message.key, rows=message.rows))
    if isinstance(message, cs.Rows):
        return pb.CardinalityResponse(rows=message.elements)
    if isinstance(message, cs.CountSummary):
        return pb.CardinalityResponse(summary=pb.CardinalitySummary(
            count=message.count, noise_bound=message.noise_bound,
            epsilon_micro=message.epsilon_micro, **envelope))
    raise _unknown(message)


def parse_cardinality_response(response: pb.CardinalityResponse) -> object | None:
    body = response.WhichOneof("body")
    if body == "accepted":
        return cs.Accepted(response.accepted.max_batch_elements)
    if body == "key":
        return cs.Key(response.key.key, response.key.rows)
    if body == "rows":
        return cs.Rows(response.rows)
    if body == "summary":
        s = response.summary
        return cs.CountSummary(s.count, s.noise_bound, s.epsilon_micro)
    return None
