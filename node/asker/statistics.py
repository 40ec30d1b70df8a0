"""The asking side of the statistics kinds: grouped aggregates and threshold checks.

Both are one bidirectional stream per query (proto/shuqiao/v1/statistics.proto); the
protocol objects do the work, this module moves their bytes and maps every failure to
a PartnerError. Every query, answered or not, gets one record in this node's query
log (role "asker"). See node/agency/statistics.py for who learns what.
"""
from __future__ import annotations

import queue
import time
import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Sequence

import grpc
import numpy as np

from protocols import labels, oprf
from protocols import psi_shuffle as ps
from protocols import threshold as th

from node.asker import threshold_tables as threshold_table
from node.asker.membership import accept_receipt
from node.transport.channels import partner_channel
from node.core.progress import Progress, no_progress
from node.runtime.context import NodeContext
from node.core.errors import REFUSALS, PartnerError, rpc_error
from node.asker.peer_tables import dataset_info, match_tags
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.rpc.shuqiao.v1 import statistics_pb2_grpc as spb_grpc
from node.transport.chunks import RoundError, chunk_size, chunks, collect, expect, income_label_context

if TYPE_CHECKING:
    from protocols.he_aggregate import GroupAggregate

OPS = {"count": spb.AGGREGATE_OP_COUNT, "sum": spb.AGGREGATE_OP_SUM, "mean": spb.AGGREGATE_OP_MEAN}
MAX_HEADER_BYTES = 64 * 2**20   # the BFV public context (~0.5 MB) and the group names
MAX_CIPHERTEXT_BYTES = 2**20    # one BFV ciphertext, n = 8192, 4 x 50 bits: ~0.5 MB at most
MAX_RELEASE_BYTES = 2**20


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


class _Exchange:
    """One bidirectional stream: messages go out through an outbox, answers come in."""

    def __init__(self, method, deadline: float) -> None:
        self._outbox: queue.Queue = queue.Queue()
        self._call = method(self._requests(), timeout=deadline)
        self.responses = iter(self._call)

    def _requests(self):
        while (message := self._outbox.get()) is not None:
            yield message

    def send(self, *messages) -> None:
        for message in messages:
            self._outbox.put(message)

    def done_sending(self) -> None:
        self._outbox.put(None)

    def cancel(self) -> None:
        self._outbox.put(None)
        self._call.cancel()


def _run(ctx: NodeContext, record: QueryRecord, partner: str, body):
    """Run ``body(channel)`` as one logged query; map every failure to PartnerError."""
    try:
        return body(partner_channel(ctx, partner))
    except PartnerError as exc:
        record.outcome = "refused" if exc.code in REFUSALS else "failed"
        record.reason = str(exc)
        raise
    except BaseException as exc:
        record.outcome, record.reason = "aborted", type(exc).__name__
        raise
    finally:
        record.write(ctx)


def _stream(partner: str, exchange_factory, steps, refused: tuple[type[Exception], ...]):
    """Run ``steps(exchange)``; RPC, round and ``refused`` protocol errors become PartnerError."""
    exchange = exchange_factory()
    try:
        return steps(exchange)
    except grpc.RpcError as exc:
        raise rpc_error(partner, exc) from None
    except RoundError as exc:
        raise PartnerError(partner, f"sent a malformed answer: {exc}") from None
    except refused as exc:
        raise PartnerError(partner, f"sent an answer that is refused: {exc}") from None
    finally:
        exchange.cancel()  # a no-op once the stream has ended


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
    from protocols import he_aggregate as ha  # TenSEAL loads only where aggregates run
    ops = tuple(dict.fromkeys(ops))
    if not ops or set(ops) - set(OPS):
        raise ValueError(f"operations must be among {', '.join(OPS)}")
    with_sums = bool(set(ops) & {"sum", "mean"})
    if with_sums and not value:
        raise ValueError("sum and mean need a value column (--value)")
    asked = sorted(set(inputs))
    if not asked:
        raise ValueError("nothing to ask: no valid identifier in the input")
    started, cfg = time.perf_counter(), ctx.config
    deadline = cfg.grpc.deadline_seconds
    record = QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=cfg.node.id,
                         answerer=partner, kind="aggregate", dataset=dataset, purpose=purpose,
                         elements=len(asked))

    def body(channel):
        info = dataset_info(pb_grpc.MembershipStub(channel), partner, dataset, deadline)
        record.version, record.epoch = info.version, info.epoch
        matcher = ps.FundCentreMatcher(asked, mapper=ctx.pool.map)
        progress("blind", 0, len(asked))
        request = matcher.request().to_bytes()
        progress("blind", len(asked), len(asked))
        header = spb.StatisticsHeader(
            query_id=record.query_id, dataset=dataset, version=info.version, epoch=info.epoch,
            purpose=purpose, total_elements=len(asked), kind=spb.STATISTICS_KIND_AGGREGATE,
            value_column=value, ops=[OPS[o] for o in ops], group_by=group_by)
        stub = spb_grpc.StatisticsStub(channel)

        def steps(ex: _Exchange):
            ex.send(spb.AggregateRequest(header=header))
            accepted = expect(ex.responses, "accepted")
            size = min(chunk_size(cfg.grpc.max_message_bytes), accepted.max_chunk_bytes or 2**20)
            ex.send(*chunks(request, size, lambda c: spb.AggregateRequest(match_request=c)))
            answer = collect(ex.responses, "match_response", 32 * (len(asked) + accepted.rows) + 64)
            selection = matcher.select(ps.ShuffleResponse.from_bytes(answer))
            if len(selection) != accepted.rows:
                raise PartnerError(partner, "matched against another number of rows than announced")
            progress("match", 1, 1)
            offered = ha.EncryptedColumns.from_bytes(
                collect(ex.responses, "columns", MAX_HEADER_BYTES))
            if with_sums and not offered.sums:
                raise PartnerError(partner, "sent no encrypted values for a sum")
            evaluator = ha.FundCentreAggregator(selection, count_epsilon=count_epsilon,
                                                mapper=ctx.pool.map)
            blocks, k = evaluator.expect(offered)

            def columns():  # one round per column, summed a few at a time as they arrive
                for i in range(k):
                    yield ha.unpack_column(collect(ex.responses, "columns",
                                                   blocks * MAX_CIPHERTEXT_BYTES + 64))
                    progress("aggregate", i + 1, k)

            masked = evaluator.evaluate_columns(offered, columns()).to_bytes()
            ex.send(*chunks(masked, size, lambda c: spb.AggregateRequest(masked=c)))
            ex.done_sending()
            release = ha.AggregateRelease.from_bytes(
                collect(ex.responses, "release", MAX_RELEASE_BYTES))
            summary = expect(ex.responses, "summary")
            return accepted, evaluator.result(release), summary

        accepted, groups, summary = _stream(partner, lambda: _Exchange(stub.Aggregate, deadline),
                                            steps, (ps.InvalidMessage, ha.AggregateError))
        record.outcome, record.epsilon_micro = "answered", summary.epsilon_micro
        accept_receipt(ctx, partner, record, summary)
        return AggregateResult(
            record.query_id, partner, dataset, info.version, info.epoch, ops, groups,
            summary.epsilon_micro / 1e6, summary.count_noise_bound, summary.sum_noise_bound,
            summary.min_group_size, accepted.rows, accepted.unusable_rows, len(asked),
            time.perf_counter() - started)

    return _run(ctx, record, partner, body)


def threshold(ctx: NodeContext, partner: str, dataset: str, purpose: str, inputs: Sequence[bytes],
              thresholds: Sequence[int], *, progress: Progress = no_progress) -> ThresholdResult:
    """Per input: is the partner's registered income at least its threshold?

    ``inputs`` (encoded identifiers) and ``thresholds`` (integers, in the unit of the
    partner's column) are aligned; each pair is one applicant, duplicates included.

    Raises:
        ValueError: nothing to ask, mismatched lengths, a threshold out of range.
        PartnerError: refusal with the partner's reason, an invalid answer, or no answer.
    """
    if not inputs or len(inputs) != len(thresholds):
        raise ValueError("give one threshold per identifier, and at least one")
    if any(not isinstance(t, int) or abs(t) >= 2**62 for t in thresholds):
        raise ValueError("thresholds must be integers below 2^62 in magnitude")
    started, cfg, m = time.perf_counter(), ctx.config, len(inputs)
    deadline = cfg.grpc.deadline_seconds
    record = QueryRecord(query_id=str(uuid.uuid4()), role="asker", asker=cfg.node.id,
                         answerer=partner, kind="threshold", dataset=dataset, purpose=purpose,
                         elements=m)

    def body(channel):
        info = dataset_info(pb_grpc.MembershipStub(channel), partner, dataset, deadline)
        stub = spb_grpc.StatisticsStub(channel)
        table = threshold_table.sync(ctx, stub, partner, dataset, deadline, progress)
        if (table.info.version, table.info.epoch) != (info.version, info.epoch):
            raise PartnerError(partner, "its threshold table and dataset listing disagree on "
                                        "the version or epoch; ask again",
                               grpc.StatusCode.FAILED_PRECONDITION)
        record.version, record.epoch = info.version, info.epoch
        header = spb.StatisticsHeader(
            query_id=record.query_id, dataset=dataset, version=info.version, epoch=info.epoch,
            purpose=purpose, total_elements=m, kind=spb.STATISTICS_KIND_THRESHOLD,
            key_id=table.info.key_id, table_digest=table.info.digest)

        def steps(ex: _Exchange):
            ex.send(spb.ThresholdRequest(header=header))
            accepted = expect(ex.responses, "accepted")
            outputs = _evaluate(ctx, ex, info, inputs, accepted.max_batch_elements, progress)
            found = _open_incomes(partner, table, info, outputs, ctx.config.node.id)
            applicants = [(c, thresholds[i]) for i, c in found.items()]
            if not applicants:  # keep the batch full-size: the agency must not see "none matched"
                applicants = [(th.FixedBaseRandomizer(table.n).encrypt(1), 0)]
            comparer = th.FundCentreThreshold(table.n, applicants, batch_size=m, mapper=ctx.pool.map)
            size = min(chunk_size(cfg.grpc.max_message_bytes), accepted.max_chunk_bytes or 2**20)
            ex.send(*chunks(comparer.request().to_bytes(), size,
                            lambda c: spb.ThresholdRequest(comparison=c)))
            ex.done_sending()
            signs = th.ThresholdResponse.from_bytes(collect(ex.responses, "signs", m // 8 + 64))
            decided = comparer.decide(signs)
            summary = expect(ex.responses, "summary")
            if summary.entries != m:
                raise PartnerError(partner, "answered another number of comparisons than asked")
            answers: list[bool | None] = [None] * m
            for i, yes in zip(found, decided):
                answers[i] = yes
            progress("compare", m, m)
            return accepted, answers, summary

        accepted, answers, summary = _stream(partner, lambda: _Exchange(stub.Threshold, deadline),
                                             steps, (th.ThresholdError,))
        record.outcome = "answered"
        record.matched = sum(a is not None for a in answers)
        accept_receipt(ctx, partner, record, summary)
        return ThresholdResult(record.query_id, partner, dataset, info.version, info.epoch, answers,
                               accepted.rows, accepted.unusable_rows, time.perf_counter() - started)

    return _run(ctx, record, partner, body)


def _evaluate(ctx, ex: _Exchange, info, inputs: Sequence[bytes], max_batch: int, progress) -> bytes:
    """Blinded batches out, evaluations (proven in VOPRF mode) back: F_k(x) per input."""
    pool, mode, m = ctx.pool, info.oprf_mode, len(inputs)
    bounds = [(a, min(m, a + max(1, max_batch))) for a in range(0, m, max(1, max_batch))]
    blinded = [pool.submit_blind(inputs[a:b], mode) for a, b in bounds]
    blinds = []
    for seq, future in enumerate(blinded):
        packed_blinds, elements = future.result()
        blinds.append(packed_blinds)
        ex.send(spb.ThresholdRequest(batch=spb.StatisticsBatch(seq=seq, elements=elements)))
    finals = []
    for seq, (a, b) in enumerate(bounds):
        answer = expect(ex.responses, "evaluated")
        if answer.seq != seq or len(answer.elements) != (b - a) * oprf.ELEMENT_LEN:
            raise RoundError(f"evaluated batch {seq} is out of order or of the wrong size")
        if mode == oprf.MODE_VOPRF:
            finals.append(pool.submit_finalize(inputs[a:b], blinds[seq], answer.elements,
                                               oprf.OUTPUT_LEN, mode, answer.proof,
                                               info.public_key, list(range(b - a))))
        else:
            finals.append(pool.submit_finalize(inputs[a:b], blinds[seq], answer.elements,
                                               oprf.OUTPUT_LEN))
        progress("evaluate", b, m)
    try:
        return b"".join(f.result() for f in finals)
    except ValueError:  # oprf.InvalidElement: a bad element or a proof that fails
        raise th.ThresholdError("evaluations that do not verify against the published key") from None


def _open_incomes(partner: str, table, info, outputs: bytes, node_id: str) -> dict[int, int]:
    """Input index -> Enc(income) for inputs whose tag is in the table."""
    w, t = oprf.OUTPUT_LEN, table.info.tag_length
    mine = np.frombuffer(b"".join(outputs[i:i + t] for i in range(0, len(outputs), w)),
                         dtype=f"S{t}")
    hit, pos = match_tags(mine, table.tags)
    context = income_label_context(owner=partner, partner=node_id, dataset=info.name,
                                   epoch=table.info.epoch, key_id=table.info.key_id)
    width = 2 * ((table.n.bit_length() + 7) // 8)
    found = {}
    for i in np.flatnonzero(hit).tolist():
        try:
            found[i] = int.from_bytes(labels.open_blob(
                outputs[i * w:(i + 1) * w], table.label(int(table.order[pos[i]])), context,
                width), "big")
        except labels.LabelError:
            raise PartnerError(partner, "sent a sealed income that does not open for a matched "
                                        "row") from None
    return found
