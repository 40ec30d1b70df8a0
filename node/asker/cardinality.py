"""The asking side of cardinality queries: a thin gRPC adapter around the fund centre's
session in protocols/cardinality_session.py (the protocol is protocols/cardinality.py).

The partner (agency) counts; the session adds this node's own dummy matches d' (a
discrete Laplace at `query.cardinality_epsilon`, shifted and clamped into [0, D']) so
that the count the agency sees, c + d', is blurred too, and subtracts d' from the
release. The padding D' is counted over, admitted and charged like the asked elements,
so this node's record counts it too.
"""
from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

from protocols import cardinality_session as cs
from protocols.session import ProtocolStateError

from node.asker.streams import dataset_info
from node.asker.streams import Exchange, accept_receipt, asker_record, converse, logged_query, partner_call
from node.core.errors import PartnerError
from node.core.progress import Progress, no_progress
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.transport import membership_wire as wire
from node.transport.channels import partner_channel


@dataclass
class CardinalityResult:
    query_id: str
    count: int          # |X ∩ Y| + noise (exact when the agency's policy sets no epsilon)
    epsilon: float      # differential privacy the agency charged; 0.0 for an exact count
    noise_bound: int    # the noise lies in [-bound, +bound]
    seconds: float


def cardinality(ctx: NodeContext, partner: str, dataset: str, purpose: str,
                inputs: Sequence[bytes], progress: Progress = no_progress) -> CardinalityResult:
    """Only the size of the intersection of `inputs` with the partner's dataset."""
    if not inputs:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started = time.perf_counter()
    cfg = ctx.config
    record = asker_record(ctx, partner, "cardinality", dataset, purpose, len(inputs))
    with logged_query(ctx, record):
        stub = pb_grpc.MembershipStub(partner_channel(ctx, partner))
        info = dataset_info(stub, partner, dataset, cfg.grpc.deadline_seconds)
        record.version, record.epoch = info.version, info.epoch
        session = cs.CardinalityAsker(
            list(inputs), epsilon=cfg.query.cardinality_epsilon, rows=info.row_count,
            max_batch=cfg.grpc.max_batch_elements, mapper=ctx.pool.map,
            progress=lambda done, total: progress("rows", done, total))
        record.elements = session.total_elements
        summary = _count(ctx, stub, partner, record, session)
        result = session.result()
        record.outcome, record.matched = "answered", result.count
        record.epsilon_micro = result.epsilon_micro
        accept_receipt(ctx, partner, record, summary)
        return CardinalityResult(record.query_id, result.count, result.epsilon_micro / 1e6,
                                 result.noise_bound, time.perf_counter() - started)


def _count(ctx, stub, partner: str, record: QueryRecord, session: cs.CardinalityAsker):
    """The Cardinality stream: the session's messages out, the agency's in; returns the
    protobuf summary (its receipt is checked by the caller)."""
    envelope = {"query_id": record.query_id, "dataset": record.dataset, "version": record.version,
                "epoch": record.epoch, "purpose": record.purpose, "kind": pb.QUERY_KIND_CARDINALITY}
    header, *rest = session.start()
    first = [wire.cardinality_request(header, **envelope), *map(wire.cardinality_request, rest)]
    with partner_call(partner, (cs.InvalidMessage, ProtocolStateError),
                      lambda exc: "sent an invalid cardinality answer"):
        finishing = converse(Exchange(stub.Cardinality, ctx.config.grpc.deadline_seconds), session,
                             first, wire.parse_cardinality_response, wire.cardinality_request)
    if finishing is None:
        raise PartnerError(partner, "the cardinality answer ended early or is malformed")
    return finishing.summary
