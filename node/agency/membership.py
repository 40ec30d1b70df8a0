"""The answering side of membership queries: a thin gRPC adapter around protocols.oprf.

Rounds (see proto/shuqiao/v1/membership.proto):
  SyncTagTable  the asker fetches the sorted tags F_k(y)[:t] of a dataset version under
                its own partner key; it matches locally, so asking costs O(asked).
  Evaluate      header (purpose, dataset, version, epoch, element count) -> Accepted;
                then per batch of blinded elements B_i -> k*B_i; Finish -> Summary.
The answerer sees only uniformly random group elements and their number. Every query,
answered or refused, is written to the query log (metadata only). Errors name the rule
that was broken, never an element.
"""
from __future__ import annotations

import logging

import grpc
from protocols import oprf

from node.policy import checks as policy
from node.agency.cardinality import CardinalityRpc
from node.agency.tables import Refused, TableRpcs, check_names, check_purpose, claim
from node.transport.identity import peer_node_id
from node.policy.consent import DIGEST_PATTERN
from node.runtime.context import NodeContext
from node.keys.oprf_keys import key_purpose, sealed_key
from node.policy.querylog import QueryRecord, seen
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)
_KINDS = {pb.QUERY_KIND_MEMBERSHIP: "membership", pb.QUERY_KIND_LABELED: "labeled",
          pb.QUERY_KIND_PREDICATE: "predicate"}


class MembershipAnswerer(TableRpcs, CardinalityRpc, pb_grpc.MembershipServicer):
    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.cfg = ctx.config

    def Evaluate(self, request_iterator, context):
        peer = peer_node_id(context)
        record = QueryRecord(query_id="", role="answerer", asker=peer, answerer=self.cfg.node.id,
                             kind="membership", dataset="")
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("body") != "header":
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "the first message of a query must be its header")
            sealed, purpose_ad = self._admit(first.header, peer, record)
            record.admit(self.ctx)  # in the ledger before any answer leaves
            yield pb.EvaluateResponse(accepted=pb.Accepted(
                query_id=record.query_id, max_batch_elements=self.cfg.grpc.max_batch_elements))
            yield from self._batches(request_iterator, sealed, purpose_ad, first.header, record)
            record.outcome = "answered"
            receipt = record.write(self.ctx)  # committed before the receipt is sent
            yield pb.EvaluateResponse(summary=pb.QuerySummary(
                query_id=record.query_id, elements_evaluated=record.elements,
                receipt=receipt.to_bytes(), ledger_public_key=self.ctx.ledger.public_key.text))
        except Refused as exc:
            record.outcome = "refused" if record.outcome != "aborted" else "aborted"
            record.reason = exc.reason
            log.info("query %s from %s refused: %s", record.query_id or "-", peer, exc.reason)
            context.abort(exc.code, exc.reason)
        except grpc.RpcError:
            record.outcome, record.reason = "aborted", "the asker's stream ended abnormally"
            raise
        except GeneratorExit:
            record.outcome, record.reason = "aborted", "the asker cancelled or went away"
            raise
        finally:
            if record.query_id and not record.written:
                record.write(self.ctx)

    # -- helpers ---------------------------------------------------------------------------
    def _admit(self, h: pb.QueryHeader, peer: str, record: QueryRecord) -> tuple[bytes, str]:
        check_names(h, record)
        if h.consent_digest and not DIGEST_PATTERN.fullmatch(h.consent_digest):
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "consent_digest is 64 lowercase hex digits")
        record.authorisation_digest = h.consent_digest  # in our entry and our receipt (consent.py)
        if h.kind not in _KINDS:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "unsupported query kind")
        record.kind = _KINDS[h.kind]
        _, grant = self._grant(h.dataset, peer)
        check_purpose(h, grant)
        limit = self.cfg.grpc.max_query_elements
        if not 1 <= h.total_elements <= limit:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"a query must ask between 1 and {limit} elements")
        try:
            policy.check_request(grant, dataset=h.dataset, kind=record.kind, elements=h.total_elements)
            if h.predicate and record.kind != "predicate":
                policy.check_request(grant, dataset=h.dataset, kind="predicate",
                                     elements=h.total_elements)
        except policy.PolicyRefusal as exc:
            raise Refused.by_policy(exc) from None
        if record.kind == "predicate" and not h.predicate:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a predicate query names its predicate")
        with self.ctx.engine.connect() as conn:
            if seen(conn, h.query_id, "answerer"):
                record.query_id = ""  # the earlier entry stands; do not log a duplicate id
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, "query_id was already used")
            self._check_epoch(conn, h.dataset, peer, h.epoch)
            table = self._table(conn, h.dataset, h.version, peer, h.epoch, h.predicate)
            record.predicate = h.predicate
            if record.kind == "labeled" and not table.label_length:
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                              f"dataset {h.dataset!r} has no labels for node {peer!r}")
            blob = sealed_key(conn, h.dataset, peer, h.epoch)
        claim(self.ctx, grant, h, record)
        return blob, key_purpose(h.dataset, peer, h.epoch)

    def _batches(self, requests, sealed: bytes, purpose_ad: str, h: pb.QueryHeader,
                 record: QueryRecord):
        done, expect_seq = 0, 0
        max_batch = self.cfg.grpc.max_batch_elements
        verifiable = self.cfg.dataset(h.dataset).mode_number == oprf.MODE_VOPRF
        unproven: dict[int, tuple[bytes, bytes]] = {}  # VOPRF: seq -> (B, E) awaiting a proof
        # The query's blinded elements so far, by their first 8 bytes (each honest element
        # is freshly blinded, so a repeat is no honest asker's: it is refused, not evaluated).
        asked: set[int] = set()
        for req in requests:
            body = req.WhichOneof("body")
            if body == "finish":
                break
            if body == "proof_request" and verifiable:
                yield self._prove(req.proof_request, unproven, sealed, purpose_ad)
                continue
            if body != "batch":
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "expected a batch, a proof request or finish")
            b = req.batch
            n, rem = divmod(len(b.elements), oprf.ELEMENT_LEN)
            if b.seq != expect_seq or rem or not 1 <= n <= max_batch or done + n > h.total_elements:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"batch {b.seq} is malformed (expected seq {expect_seq}, a whole "
                              f"number of 1..{max_batch} elements within the announced total)")
            before = len(asked)
            asked.update(int.from_bytes(b.elements[i:i + 8], "little")
                         for i in range(0, len(b.elements), oprf.ELEMENT_LEN))
            if len(asked) != before + n:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"batch {b.seq} repeats a blinded element of this query")
            try:
                evaluated = self.ctx.pool.blind_evaluate(sealed, purpose_ad, b.elements)
            except oprf.InvalidElement:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"batch {b.seq} holds an invalid group element") from None
            if verifiable:
                unproven[b.seq] = (b.elements, evaluated)
            record.evaluated += n  # charged from here on, however the query ends
            done += n
            expect_seq += 1
            yield pb.EvaluateResponse(batch=pb.ElementBatch(seq=b.seq, elements=evaluated))
        else:
            record.outcome = "aborted"
            raise Refused(grpc.StatusCode.CANCELLED, "the stream ended without finish")
        if done != h.total_elements:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"finish after {done} of {h.total_elements} announced elements")

    def _prove(self, request: pb.ProofRequest, unproven: dict, sealed: bytes,
               purpose_ad: str) -> pb.EvaluateResponse:
        """A DLEQ proof over the elements of one answered batch that the asker picked."""
        pair = unproven.pop(request.seq, None)
        indices = list(request.indices)
        w = oprf.ELEMENT_LEN
        if pair is None or not indices or any(b <= a for a, b in zip(indices, indices[1:])) \
                or indices[-1] >= len(pair[0]) // w:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"proof request for batch {request.seq} names no answered batch, or "
                          "indices that are not distinct, ascending and within it")
        pick = lambda packed: b"".join(packed[i * w:(i + 1) * w] for i in indices)
        proof = self.ctx.pool.prove(sealed, purpose_ad, pick(pair[0]), pick(pair[1]))
        return pb.EvaluateResponse(proof=pb.BatchProof(seq=request.seq, proof=proof))
