"""The asking side of the statistics kinds: grouped aggregates and threshold checks.

Both are one bidirectional stream per query (proto/shuqiao/v1/statistics.proto). The
protocols are sessions (protocols/aggregate.AggregateAsker,
protocols/threshold_session.ThresholdAsker); this module builds the header, moves the
session's messages, keeps the partner's receipt and maps every failure to a
PartnerError. Every query, answered or not, gets one record in this node's query log
(role "asker"). See node/agency/statistics.py for who learns what.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Sequence

from protocols.session import ProtocolStateError
from protocols.session import SessionRefusal
from protocols.threshold_session import ThresholdAsker, check_applicants

from node.asker import threshold_tables as threshold_table
from node.asker.streams import dataset_info
from node.asker.streams import Exchange, accept_receipt, asker_record, converse, logged_query, partner_call
from node.core.errors import NotServed
from node.core.progress import Progress, no_progress
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.rpc.shuqiao.v1 import statistics_pb2_grpc as spb_grpc
from node.runtime.context import NodeContext
from node.transport.channels import partner_channel
from node.transport.chunks import chunk_size, unwrap, wrap
from node.transport.status import partner_refusal

if TYPE_CHECKING:
    from protocols.he_aggregate import GroupAggregate

OPS = {"count": spb.AGGREGATE_OP_COUNT, "sum": spb.AGGREGATE_OP_SUM, "mean": spb.AGGREGATE_OP_MEAN}


@dataclass
class AggregateResult:
    query_id: str
    partner: str
    dataset: str
    version: int
    epoch: int
    ops: tuple[str, ...]
    groups: dict[str, GroupAggregate]   # group name -> figures, or suppressed
    epsilon: float          # differential privacy charged; 0.0 for exact figures
    count_noise_bound: int  # |noise| on a count is below this except with probability 2^-64
    sum_noise_bound: int
    min_group_size: int
    rows: int               # partner rows taking part (with a usable value)
    unusable_rows: int      # partner rows left out (value not an integer in range)
    asked: int
    seconds: float

    @property
    def suppressed(self) -> list[str]:
        return [name for name, g in self.groups.items() if g.suppressed]


@dataclass
class ThresholdResult:
    query_id: str
    partner: str
    dataset: str
    version: int
    epoch: int
    answers: list[bool | None]   # per input: income >= threshold; None: no usable income
    rows: int
    unusable_rows: int
    seconds: float


def _converse(ctx: NodeContext, partner: str, method, envelope, header, session):
    """One query stream: the header, then the session's messages both ways until it is
    finished; returns the partner's summary (with its receipt). The session refuses
    what the partner sends in its own words ("sent a malformed answer: ...")."""
    to_wire = partial(wrap, envelope)
    # The opening messages (the expensive blinding) are ready before the stream opens.
    first = [envelope(header=header), *map(to_wire, session.start())]
    with partner_call(partner, (SessionRefusal, ProtocolStateError)):
        finishing = converse(Exchange(method, ctx.config.grpc.deadline_seconds), session, first,
                             unwrap, to_wire)
        if finishing is None:
            session.end_of_stream()  # refuses, naming the round the partner left unfinished
    return finishing.summary


def _checked_ops(ops: Sequence[str], value: str) -> tuple[tuple[str, ...], bool]:
    ops = tuple(dict.fromkeys(ops))
    if not ops or set(ops) - set(OPS):
        raise ValueError(f"operations must be among {', '.join(OPS)}")
    with_sums = bool(set(ops) & {"sum", "mean"})
    if with_sums and not value:
        raise ValueError("sum and mean need a value column (--value)")
    return ops, with_sums


def aggregate(ctx: NodeContext, partner: str, dataset: str, purpose: str, inputs: Sequence[bytes],
              *, value: str = "", ops: Sequence[str] = ("count",), group_by: str = "",
              progress: Progress = no_progress, count_epsilon: float | None = 1.0) -> AggregateResult:
    """Count / sum / mean of the partner's ``value`` over ``inputs`` ∩ its dataset.

    Args:
        inputs: encoded identifiers (duplicates are asked once).
        count_epsilon: this node's own noise on the per-group counts the partner sees
            for suppression (subtracted again here); None shows it exact counts.

    Raises:
        ValueError: nothing to ask, or an unknown or incomplete set of operations.
        PartnerError: refusal with the partner's reason, an invalid answer, or no answer.
    """
    from protocols.aggregate import AggregateAsker  # TenSEAL loads only where aggregates run
    ops, with_sums = _checked_ops(ops, value)
    asked = sorted(set(inputs))
    if not asked:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started, cfg = time.perf_counter(), ctx.config
    record = asker_record(ctx, partner, "aggregate", dataset, purpose, len(asked))
    with logged_query(ctx, record):
        channel = partner_channel(ctx, partner)
        info = dataset_info(pb_grpc.MembershipStub(channel), partner, dataset,
                            cfg.grpc.deadline_seconds)
        record.version, record.epoch = info.version, info.epoch
        session = AggregateAsker(asked, with_sums=with_sums, count_epsilon=count_epsilon,
                                 chunk_bytes=chunk_size(cfg.grpc.max_message_bytes),
                                 mapper=ctx.pool.map, progress=progress)
        header = spb.StatisticsHeader(
            query_id=record.query_id, dataset=dataset, version=info.version, epoch=info.epoch,
            purpose=purpose, total_elements=session.elements, kind=spb.STATISTICS_KIND_AGGREGATE,
            value_column=value, ops=[OPS[o] for o in ops], group_by=group_by)
        summary = _converse(ctx, partner, spb_grpc.StatisticsStub(channel).Aggregate,
                            spb.AggregateRequest, header, session)
        figures = session.result()
        record.outcome, record.epsilon_micro = "answered", summary.epsilon_micro
        accept_receipt(ctx, partner, record, summary)
        return AggregateResult(
            record.query_id, partner, dataset, info.version, info.epoch, ops, figures.groups,
            summary.epsilon_micro / 1e6, summary.count_noise_bound, summary.sum_noise_bound,
            summary.min_group_size, figures.rows, figures.unusable_rows, figures.asked,
            time.perf_counter() - started)


def threshold(ctx: NodeContext, partner: str, dataset: str, purpose: str, inputs: Sequence[bytes],
              thresholds: Sequence[int], *, progress: Progress = no_progress) -> ThresholdResult:
    """Per input: is the partner's registered income at least its threshold?

    ``inputs`` (encoded identifiers) and ``thresholds`` (integers, in the unit of the
    partner's column) are aligned; each pair is one applicant, duplicates included.

    Raises:
        ValueError: nothing to ask, mismatched lengths, a threshold out of range.
        PartnerError: refusal with the partner's reason, an invalid answer, or no answer.
    """
    check_applicants(inputs, thresholds)
    started, cfg, m = time.perf_counter(), ctx.config, len(inputs)
    deadline = cfg.grpc.deadline_seconds
    record = asker_record(ctx, partner, "threshold", dataset, purpose, m)

    with logged_query(ctx, record):
        channel = partner_channel(ctx, partner)
        info = dataset_info(pb_grpc.MembershipStub(channel), partner, dataset, deadline)
        stub = spb_grpc.StatisticsStub(channel)
        held = _held_table(ctx, stub, partner, info, deadline, progress)
        record.version, record.epoch = info.version, info.epoch
        session = ThresholdAsker(
            inputs, thresholds, held.table, owner=partner, asker=cfg.node.id, dataset=info.name,
            oprf_mode=info.oprf_mode, public_key=info.public_key,
            chunk_bytes=chunk_size(cfg.grpc.max_message_bytes), mapper=ctx.pool.map,
            progress=progress)
        header = spb.StatisticsHeader(
            query_id=record.query_id, dataset=dataset, version=info.version, epoch=info.epoch,
            purpose=purpose, total_elements=m, kind=spb.STATISTICS_KIND_THRESHOLD,
            key_id=held.info.key_id, table_digest=held.info.digest)
        summary = _converse(ctx, partner, stub.Threshold, spb.ThresholdRequest, header, session)
        answers = session.result()
        record.outcome, record.matched = "answered", answers.matched
        accept_receipt(ctx, partner, record, summary)
        return ThresholdResult(record.query_id, partner, dataset, info.version, info.epoch,
                               answers.answers, answers.rows, answers.unusable_rows,
                               time.perf_counter() - started)


def _held_table(ctx: NodeContext, stub, partner: str, info, deadline: float, progress):
    """The partner's current threshold table for this node, synced if need be; it must be
    the one of the version and epoch its listing names."""
    held = threshold_table.sync(ctx, stub, partner, info.name, deadline, progress)
    if (held.info.version, held.info.epoch) != (info.version, info.epoch):
        raise partner_refusal(partner, "its threshold table and dataset listing disagree on "
                                       "the version or epoch; ask again", NotServed)
    return held
