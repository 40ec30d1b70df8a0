"""The answering side of cardinality queries: a thin gRPC adapter around the agency's
session in protocols/cardinality_session.py (the protocol and who learns what are in
protocols/cardinality.py).

The agency counts f = |b*A ∩ Y''| itself and releases f + L, L a discrete Laplace sample
clamped to an announced bound; the asker subtracts its own dummy matches d'. This module
applies the policy around the session: admission (grant, purpose, quotas, the current
version and key epoch; a noised query reserves its epsilon from the partner's budget for
the dataset and epoch), the grant's floor and DP settings handed to the session, the
ledger's admitted entry before any answer leaves, and the charge: a bad A is refused
before anything is answered, uncharged, while from the moment Y' leaves the query is
charged its elements and epsilon however it ends (a bad Y'' is broken_by_asker). The
header's total covers the asker's padding: those places are counted over like any
asked element (a fund centre could fill them with real people), so they are admitted,
reserved and charged with the rest. Without DP the release is exact; the grant's floor
(or its explicit exact_small_counts) is then the control against an asker padding a
small query with people it knows are absent.
"""
from __future__ import annotations

from adapters import IdType, encode
from protocols import cardinality as card
from protocols import cardinality_session as cs
from protocols.session import ProtocolStateError

from node.agency.admission import admit, answered, serve_session
from node.datasets.registration import iter_rows
from node.policy import checks as policy
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.transport import membership_wire as wire

def hashed_rows(ctx, version) -> bytes:
    """H(y) of every row of ``version``, kept in the context for the next query."""
    return ctx.caches.cardinality_hashes.get_or_build(version.id, lambda: _hash_rows(ctx, version))


def _hash_rows(ctx, version) -> bytes:
    with ctx.engine.connect() as conn:
        ids = [encode(IdType(version.id_type), s) for s, _ in iter_rows(conn, version.id, ctx.kek)]
    parts = [ids[i:i + 4096] for i in range(0, len(ids), 4096)]
    return b"".join(ctx.pool.map(card.hash_batch, parts))


class CardinalityRpc:
    def Cardinality(self, request_iterator, context):
        return self.query_stream(request_iterator, context, "cardinality", self._count,
                                 (card.InvalidMessage, ProtocolStateError))

    def _count(self, requests, peer: str, record: QueryRecord):
        admitted = admit(self.ctx, next(requests, None), peer, record, current=True,
                         kinds={pb.QUERY_KIND_CARDINALITY: "cardinality"}, reserve_epsilon=True)
        record.admit(self.ctx)  # in the ledger before any answer leaves
        grant, version = admitted.grant, admitted.version
        session = cs.CardinalityAnswerer(
            cs.Header(admitted.header.total_elements), hashed_rows=lambda: hashed_rows(self.ctx, version),
            floor=policy.min_elements(grant, "cardinality"), epsilon=grant.dp_epsilon,
            delta=grant.dp_delta, max_batch=self.cfg.grpc.max_batch_elements, mapper=self.ctx.pool.map)

        def emit(message):
            # Y' leaves from the key on: charged its elements and epsilon whatever happens next.
            record.evaluated, record.epsilon_micro = session.evaluated, session.epsilon_micro
            if isinstance(message, cs.CountSummary):  # committed before the receipt is sent
                return wire.cardinality_response(message, query_id=record.query_id,
                                                 **answered(self.ctx, record))
            envelope = {"query_id": record.query_id} if isinstance(message, cs.Accepted) else {}
            return wire.cardinality_response(message, **envelope)

        yield from serve_session(session, requests, wire.parse_cardinality_request, emit)
