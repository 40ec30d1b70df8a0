"""The answering side of membership queries: a thin gRPC adapter around the session in
protocols/membership.py (rounds, checks, and who learns what are told there).

Rounds (see proto/shuqiao/v1/membership.proto):
  SyncTagTable  the asker fetches the sorted tags F_k(y)[:t] of a dataset version under
                its own partner key; it matches locally, so asking costs O(asked).
  Evaluate      header (purpose, dataset, version, epoch, element count) -> Accepted;
                then per batch of blinded elements B_i -> k*B_i (and VOPRF proofs of the
                elements the asker picks); Finish -> Summary with the signed receipt.
  Cardinality and Bulk  their own kinds on the same service (node/agency/cardinality.py,
                node/agency/bulk.py).
This module applies the policy around the session: admission (grant, purpose, quotas,
the served table and key epoch), the ledger's admitted entry before any answer leaves,
charging every evaluated element however the query ends, and the completed entry whose
receipt the summary carries. Every query, answered or refused, is written to the query
log (metadata only). Errors name the rule that was broken, never an element.
"""
from __future__ import annotations

from protocols import membership as ms
from protocols import oprf
from protocols.session import ProtocolStateError

from node.agency.admission import Admitted, Servicer, StreamEnded, admit, answered, serve_session
from node.agency.bulk import BulkRpc
from node.agency.cardinality import CardinalityRpc
from node.agency.tables import TableRpcs
from node.core.errors import InvalidRequest, NotServed
from node.keys.oprf_keys import key_purpose, sealed_key
from node.keys.workers import SealedKeyEvaluator
from node.policy import checks as policy
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.transport import membership_wire as wire

_KINDS = {pb.QUERY_KIND_MEMBERSHIP: "membership", pb.QUERY_KIND_LABELED: "labeled",
          pb.QUERY_KIND_PREDICATE: "predicate"}
PROTOCOL_ERRORS = (ms.InvalidMessage, ProtocolStateError)


class MembershipAnswerer(Servicer, TableRpcs, CardinalityRpc, BulkRpc, pb_grpc.MembershipServicer):
    def Evaluate(self, request_iterator, context):
        return self.query_stream(request_iterator, context, "membership", self._evaluate,
                                 PROTOCOL_ERRORS)

    def _evaluate(self, requests, peer: str, record: QueryRecord):
        admitted = admit(self.ctx, next(requests, None), peer, record, kinds=_KINDS, consent=True,
                         check=lambda conn, a: self._served(conn, a, peer, record))
        h = admitted.header
        record.admit(self.ctx)  # in the ledger before any answer leaves
        session = ms.MembershipAnswerer(
            ms.Header(h.total_elements),
            SealedKeyEvaluator(self.ctx.pool, admitted.checked, key_purpose(h.dataset, peer, h.epoch)),
            max_batch=self.cfg.grpc.max_batch_elements,
            verifiable=admitted.declared.mode_number == oprf.MODE_VOPRF)

        def emit(message):
            record.evaluated = session.evaluated  # charged from here on, however the query ends
            if isinstance(message, ms.Summary):  # committed before the receipt is sent
                return wire.evaluate_response(message, query_id=record.query_id,
                                              **answered(self.ctx, record))
            envelope = {"query_id": record.query_id} if isinstance(message, ms.Accepted) else {}
            return wire.evaluate_response(message, **envelope)

        try:
            yield from serve_session(session, requests, wire.parse_evaluate_request, emit)
        except StreamEnded:
            record.outcome = "aborted"  # the asker stopped sending: not a refusal of ours
            raise

    def _served(self, conn, admitted: Admitted, peer: str, record: QueryRecord) -> bytes:
        """The kind's own checks (a predicate is granted and named, the table it asks of
        is served, labels exist); returns the query's sealed key."""
        h, kind, grant = admitted.header, admitted.kind, admitted.grant
        if h.predicate and kind != "predicate":
            policy.check_request(grant, dataset=h.dataset, kind="predicate", elements=h.total_elements)
        if kind == "predicate" and not h.predicate:
            raise InvalidRequest("a predicate query names its predicate")
        table = self._table(conn, h.dataset, h.version, peer, h.epoch, h.predicate)
        record.predicate = h.predicate
        if kind == "labeled" and not table.label_length:
            raise NotServed(f"dataset {h.dataset!r} has no labels for node {peer!r}")
        return sealed_key(conn, h.dataset, peer, h.epoch)
