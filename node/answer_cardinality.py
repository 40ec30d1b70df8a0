"""The answering side of cardinality queries (protocols/cardinality.py over gRPC).

The asker learns |X ∩ Y| + d - shift, where the agency draws the d dummy matches from a
discrete Laplace distribution (OpenDP) shifted into [0, D]; the agency learns |X| only.
Each noised query is charged its epsilon to the partner's budget for the dataset and
key epoch; when the budget is spent, further queries are refused. Because both keys are
fresh, the agency cannot tell whether two queries share people: the budget, the minimum
query size and the quotas are what stop a partner from differencing counts.

Within one query every element is blinded under the asker's one key, so a repeated
person is a repeated element: such a query is refused before anything is answered, and
the minimum size counts distinct elements. Known limit: an asker that blinds some
elements under a second key of its own is not detected (nothing ties an element to P),
and unblinding with that key counts those elements without the dummy matches, which are
tied to P; the noise therefore protects honest askers' counts, not against that.
"""
from __future__ import annotations

import math
import threading

import grpc

from adapters import IdType, encode
from protocols import cardinality as card
from protocols.dp import DiscreteLaplace

from . import policy
from .answer_tables import Refused, check_names, check_purpose, claim
from .datasets import current_version, iter_rows
from .querylog import QueryRecord, seen
from .rpc.shuqiao.v1 import membership_pb2 as pb

SEND = 65536  # elements per response chunk (2 MiB)

_hashed: dict[int, bytes] = {}   # dataset version id -> H(y) of every row (process cache)
_hash_lock = threading.Lock()


def noise_plan(grant) -> tuple[int, int, float]:
    """(fakes d, padding D, epsilon) for one query under `grant`'s DP settings."""
    if grant.dp_epsilon is None:
        return 0, 0, 0.0
    laplace = DiscreteLaplace(1, grant.dp_epsilon)    # sensitivity 1: one person
    shift = math.ceil(laplace.scale * math.log(1.0 / grant.dp_delta))  # P(|L| > shift) <= delta
    fakes = min(max(shift + laplace.sample(), 0), 2 * shift)  # clamped: the delta of (eps, delta)
    return fakes, 2 * shift, grant.dp_epsilon


def hashed_rows(ctx, version) -> bytes:
    with _hash_lock:
        if version.id not in _hashed:
            with ctx.engine.connect() as conn:
                ids = [encode(IdType(version.id_type), s) for s, _ in iter_rows(conn, version.id, ctx.kek)]
            parts = [ids[i:i + 4096] for i in range(0, len(ids), 4096)]
            _hashed.clear()
            _hashed[version.id] = b"".join(ctx.pool.map(card.hash_batch, parts))
        return _hashed[version.id]


class CardinalityRpc:
    def Cardinality(self, request_iterator, context):
        from .auth import peer_node_id
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
            point, batches, n = b"", [], 0
            for req in request_iterator:
                body = req.WhichOneof("body")
                if body == "point" and not point:
                    point = req.point
                elif body == "batch" and len(req.batch.elements) % 32 == 0 and req.batch.elements:
                    n += len(req.batch.elements) // 32
                    if n > first.header.total_elements:
                        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "more elements than announced")
                    batches.append(req.batch.elements)
                elif body == "finish":
                    break
                else:
                    raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "malformed cardinality stream")
            else:
                raise Refused(grpc.StatusCode.CANCELLED, "the stream ended without finish")
            if n != first.header.total_elements or not point:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "finish before all announced elements and the point")
            asked = b"".join(batches)
            if policy.has_repeats(asked):  # one key blinds them all: a repeat is a repeated person
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "the query repeats an element; every element must be distinct")
            fakes, padding, epsilon = noise_plan(grant)
            agency = card.AgencyCount(padding, fakes)
            try:
                b, y = agency.respond(point, asked, hashed_rows(self.ctx, version),
                                      mapper=self.ctx.pool.map)
            except card.InvalidMessage:
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "the query holds an invalid group element") from None
            # The noised count is released from here on: charged whatever happens next.
            record.evaluated, record.epsilon_micro = n, round(epsilon * 1e6)
            for i in range(0, len(b), 32 * SEND):
                yield pb.CardinalityResponse(blinded=b[i:i + 32 * SEND])
            for i in range(0, len(y), 32 * SEND):
                yield pb.CardinalityResponse(rows=y[i:i + 32 * SEND])
            record.outcome = "answered"
            receipt = record.write(self.ctx)
            yield pb.CardinalityResponse(summary=pb.CardinalitySummary(
                query_id=record.query_id, padding=padding, shift=padding // 2,
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
        record.elements = h.total_elements
        return grant, version

