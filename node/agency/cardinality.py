"""The answering side of cardinality queries (protocols/cardinality.py over gRPC).

The agency counts f = |b*A ∩ Y''| itself and releases f + L, L a discrete Laplace sample
(OpenDP, sensitivity 2: see the protocol module) clamped to an announced bound; the
asker subtracts its own dummy matches d'. The agency learns |X| (+ the asker's padding
D') and c + d'. The asker never receives b times anything it chose, so blinding some
elements under a second key of its own, or sending them unblinded, gains it nothing but
the noised release. Each noised query is charged its epsilon to the partner's budget
for the dataset and key epoch; when the budget is spent, further queries are refused.

Stream: header; open (P, D'); batches of A; finish -> key (Q, |Y'|) and Y' in chunks;
Y'' in chunks; finish -> summary. A, Y'' and P are checked (sizes, validity,
distinctness, the canaries); A is checked before anything is answered, so a bad A is
refused uncharged, while a bad Y'' comes after Y' was computed and left, so it is
charged (broken_by_asker). A repeated element in A is refused as before: all of A is
one key's, so a repeat is a repeated person. Without DP the release is exact; the
grant's floor (or its explicit exact_small_counts) is then the control against an asker
padding a small query with people it knows are absent.
"""
from __future__ import annotations

import math

import grpc

from adapters import IdType, encode
from protocols import cardinality as card
from protocols.dp import DiscreteLaplace

from node.policy import checks as policy
from node.agency.tables import Refused, check_names, check_purpose, claim
from node.datasets.registration import current_version, iter_rows
from node.policy.querylog import QueryRecord, seen
from node.rpc.shuqiao.v1 import membership_pb2 as pb

SEND = 65536  # elements per response chunk (2 MiB)

MAX_ASKER_PADDING = 4096   # D' cap: bounds the spare places of a malicious asker's Y''


def noise_plan(grant) -> tuple[int, int, float]:
    """(noise L, bound, epsilon) for one query under `grant`'s DP settings; |L| <= bound."""
    if grant.dp_epsilon is None:
        return 0, 0, 0.0
    laplace = DiscreteLaplace(card.SENSITIVITY, grant.dp_epsilon)
    bound = math.ceil(laplace.scale * math.log(1.0 / grant.dp_delta))  # P(|L| > bound) <= delta
    return min(max(laplace.sample(), -bound), bound), bound, grant.dp_epsilon


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
        from node.transport.identity import peer_node_id
        peer = peer_node_id(context)
        record = QueryRecord(query_id="", role="answerer", asker=peer, answerer=self.cfg.node.id,
                             kind="cardinality", dataset="")
        try:
            first = next(request_iterator, None)
            if first is None or first.WhichOneof("body") != "header":
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the first message of a query must be its header")
            grant, version = self._admit_cardinality(first.header, peer, record)
            record.admit(self.ctx)
            yield pb.CardinalityResponse(accepted=pb.Accepted(
                query_id=record.query_id, max_batch_elements=self.cfg.grpc.max_batch_elements))
            # The header's total covers the asker's padding: those places are counted
            # over like any asked element (a fund centre could fill them with real
            # people), so they are admitted, reserved and charged with the rest.
            total = first.header.total_elements
            opened, batches = None, []
            for req in _until_finish(request_iterator):
                if req.WhichOneof("body") == "open" and opened is None:
                    opened = req.open
                elif req.WhichOneof("body") == "batch" and opened is not None and req.batch.elements:
                    batches.append(req.batch.elements)
                    if sum(map(len, batches)) > 32 * total:
                        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "more elements than announced")
                else:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed cardinality stream")
            asked = b"".join(batches)
            if opened is None or len(asked) != 32 * total:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "finish before all announced elements and the point")
            if policy.has_repeats(asked):  # one key blinds them all: a repeat is a repeated person
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "the query repeats an element; every element must be distinct")
            rows = hashed_rows(self.ctx, version)
            if not opened.padding < min(len(rows) // 32, MAX_ASKER_PADDING + 1):
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"the padding must be below the row count and at most {MAX_ASKER_PADDING}")
            floor = policy.min_elements(grant, "cardinality")
            if total - opened.padding < floor:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              f"a query must ask at least {floor} elements besides its padding")
            agency = card.AgencyCount(len(rows) // 32, total - opened.padding, opened.padding)
            try:
                agency.accept(opened.point, asked)
            except card.InvalidMessage:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the query holds an invalid group element") from None
            noise, bound, epsilon = noise_plan(grant)
            q, y = agency.rows_message(rows, mapper=self.ctx.pool.map)
            # Y' leaves from here on: charged whatever happens next.
            record.evaluated, record.epsilon_micro = total, round(epsilon * 1e6)
            yield pb.CardinalityResponse(key=pb.CardinalityKey(key=q, rows=len(y) // 32))
            for i in range(0, len(y), 32 * SEND):
                yield pb.CardinalityResponse(rows=y[i:i + 32 * SEND])
            replies, size = [], 32 * agency.reply_size
            for req in _until_finish(request_iterator):
                if req.WhichOneof("body") != "rows" or sum(map(len, replies)) + len(req.rows) > size:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed cardinality reply")
                replies.append(req.rows)
            try:
                matched = agency.matches(b"".join(replies), mapper=self.ctx.pool.map)
            except card.InvalidMessage:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "the reply is malformed, holds an invalid or repeated element, "
                              "or was not computed with the announced key") from None
            record.outcome = "answered"
            receipt = record.write(self.ctx)
            yield pb.CardinalityResponse(summary=pb.CardinalitySummary(
                query_id=record.query_id, count=matched + noise, noise_bound=bound,
                epsilon_micro=record.epsilon_micro, receipt=receipt.to_bytes(),
                ledger_public_key=self.ctx.ledger.public_key.text))
        except Refused as exc:
            record.outcome, record.reason = "refused", exc.reason
            context.abort(exc.code, exc.reason)
        except GeneratorExit:
            record.outcome, record.reason = "aborted", "the asker cancelled or went away"
            raise
        finally:
            if record.query_id and not record.written:
                record.write(self.ctx)

    def _admit_cardinality(self, h: pb.QueryHeader, peer: str, record: QueryRecord):
        check_names(h, record)
        if h.kind != pb.QUERY_KIND_CARDINALITY:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "a cardinality query must say so")
        _, grant = self._grant(h.dataset, peer)
        check_purpose(h, grant)
        try:
            policy.check_request(grant, dataset=h.dataset, kind="cardinality", elements=h.total_elements)
        except policy.PolicyRefusal as exc:
            raise Refused.by_policy(exc) from None
        with self.ctx.engine.connect() as conn:
            if seen(conn, h.query_id, "answerer"):
                record.query_id = ""
                raise Refused(grpc.StatusCode.ALREADY_EXISTS, "query_id was already used")
            version = current_version(conn, h.dataset)
            if version is None or version.version != h.version:
                raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                              "cardinality queries run on the current version; list datasets again")
            self._check_epoch(conn, h.dataset, peer, h.epoch)
        epsilon = round(grant.dp_epsilon * 1e6) if grant.dp_epsilon is not None else 0
        claim(self.ctx, grant, h, record, epsilon_micro=epsilon)
        return grant, version


def _until_finish(request_iterator):
    """The asker's messages up to (not including) the next finish; Refused if none comes."""
    for req in request_iterator:
        if req.WhichOneof("body") == "finish":
            return
        yield req
    raise Refused(grpc.StatusCode.CANCELLED, "the stream ended without finish")
