"""The agency's side of aggregate queries: shuffled match, BFV columns, noised release.

The per-query protocol state (the shuffle key and permutation, the BFV secret key)
lives in this handler's frame for the stream's lifetime only, keyed by nothing a peer
can name: it is never stored, pickled or logged. See node/agency/statistics.py for
what each side learns.
"""
from __future__ import annotations

from fractions import Fraction

import grpc

from protocols import psi_shuffle as ps

from node.policy import checks as policy
from node.agency.tables import Refused
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.datasets.statistics_rows import MAX_GROUPS, aggregate_rows, hashed_rows, select_packed, version_columns
from node.transport.chunks import chunk_size, chunks, collect

OPS = {spb.AGGREGATE_OP_COUNT: "count", spb.AGGREGATE_OP_SUM: "sum", spb.AGGREGATE_OP_MEAN: "mean"}

class _Exact:
    """The grant asks for exact releases (no ``dp_epsilon``): no noise, nothing charged."""

    epsilon = Fraction(0)

    def __init__(self, sensitivity: int, epsilon: Fraction) -> None:
        pass

    def sample(self) -> int:
        return 0

    def tail_bound(self, log2_failure: int = 64) -> int:
        return 0


class _Unmetered:
    def charge(self, epsilon: Fraction) -> Fraction:
        return Fraction(0)


def epsilon_plan(grant, with_sums: bool) -> tuple[Fraction, Fraction | None]:
    """(epsilon for the counts, for the sums): the grant's per-query epsilon, split
    evenly when sums are released too (basic composition); zeros without DP."""
    if grant.dp_epsilon is None:
        return Fraction(0), Fraction(0) if with_sums else None
    eps = Fraction(str(grant.dp_epsilon))
    return (eps / 2, eps / 2) if with_sums else (eps, None)


class AggregateRpc:
    def Aggregate(self, request_iterator, context):
        return self._stream(request_iterator, context, "aggregate", self._aggregate)

    def _aggregate(self, requests, peer: str, record: QueryRecord):
        from protocols import he_aggregate as ha  # TenSEAL loads only where aggregates run
        h, _, grant, version = self._admit(next(requests, None), peer, record, "aggregate",
                                           spb.STATISTICS_KIND_AGGREGATE)
        ops = {OPS.get(op) for op in h.ops} or {"count"}
        if None in ops:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "unknown aggregate operation")
        with_sums = bool(ops & {"sum", "mean"})
        if with_sums and not h.value_column:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, "sum and mean need a value column")
        for column, role in ((h.value_column, "an aggregate value"),
                             (h.group_by, "a group-by column")):
            if column:
                self._check_column(column, grant.aggregate_columns, version, h.dataset, role)
        if with_sums and grant.dp_epsilon is not None and grant.aggregate_value_bound is None:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"noised sums on {h.dataset!r} need the grant's aggregate_value_bound "
                          "(the largest value one row may add); ask the agency to set it")
        rows = aggregate_rows(version_columns(self.ctx, version), h.value_column, h.group_by,
                              grant.aggregate_value_bound)
        if len(rows.group_names) > MAX_GROUPS:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"column {h.group_by!r} has more than {MAX_GROUPS} distinct values")
        if not len(rows.positions):
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"no row of {h.dataset!r} has a usable value in {h.value_column!r}")
        pool, m = self.ctx.pool, h.total_elements
        hashed = select_packed(hashed_rows(self.ctx, version, version_columns(self.ctx, version)),
                               rows.positions, 32)
        shuffler = ps.AgencyShuffler(hashed, mapper=pool.map)
        size = chunk_size(self.cfg.grpc.max_message_bytes)
        self._admitted(record)
        yield spb.AggregateResponse(accepted=spb.StatisticsAccepted(
            query_id=record.query_id, max_chunk_bytes=size, rows=len(rows.positions),
            unusable_rows=rows.unusable))
        shuffler.prepare()  # query-independent: overlaps with the asker's blinding
        request = collect(requests, "match_request", 32 * m + 64)
        try:
            match = ps.ShuffleRequest.from_bytes(request)
            if len(match.blinded) % 32 == 0 and policy.has_repeats(match.blinded):
                # one key blinds them all: a repeated element is a repeated person
                raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                              "match request refused: it repeats an element; every element must be distinct")
            response = shuffler.respond(match, min_elements=m, max_elements=m)
        except ps.InvalidMessage as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"match request refused: {exc}") from None
        record.evaluated = m  # the match leaves now: charged however the query ends
        yield from chunks(response.to_bytes(), size,
                          lambda c: spb.AggregateResponse(match_response=c))
        aggregator = ha.AgencyAggregator(rows.values, rows.groups, rows.group_names,
                                         shuffler.permutation, value_bound=rows.value_bound,
                                         with_sums=with_sums, mapper=pool.map)
        header, columns = aggregator.offer_columns(columns_at_once=2 * pool.workers)
        yield from chunks(header.to_bytes(), size, lambda c: spb.AggregateResponse(columns=c))
        widest = 0
        for column in columns:  # one round per column: memory holds a few, not all
            widest = max(widest, *map(len, column))
            yield from chunks(ha.pack_column(column), size,
                              lambda c: spb.AggregateResponse(columns=c))
        per_group = 1 + (aggregator.limbs if with_sums else 0)
        masked = collect(requests, "masked", 2 * widest * per_group * len(rows.group_names) + 1024)
        release, eps = self._release(aggregator, masked, grant, peer, h, record, with_sums)
        yield from chunks(release.to_bytes(), size, lambda c: spb.AggregateResponse(release=c))
        eps_count, eps_sum = eps
        count_bound = ha.DiscreteLaplace(1, eps_count).tail_bound() if eps_count else 0
        sum_bound = (ha.DiscreteLaplace(rows.value_bound, eps_sum).tail_bound()
                     if with_sums and eps_sum else 0)
        yield spb.AggregateResponse(summary=spb.AggregateSummary(
            query_id=record.query_id, epsilon_micro=record.epsilon_micro,
            count_noise_bound=count_bound, sum_noise_bound=sum_bound,
            min_group_size=grant.min_group_size, value_bound=rows.value_bound,
            **self._complete(record)))

    def _release(self, aggregator, masked: bytes, grant, peer: str, h, record, with_sums: bool):
        from protocols import he_aggregate as ha
        eps_count, eps_sum = epsilon_plan(grant, with_sums)
        try:
            masked_aggregates = ha.MaskedAggregates.from_bytes(masked)
            if grant.dp_epsilon is None:
                budget, mechanism = _Unmetered(), _Exact
            else:  # what admission reserved for this query (node/policy/admission.py), and no more
                budget = ha.EpsilonBudget(peer, h.dataset, h.epoch, str(grant.dp_epsilon))
                mechanism = ha.DiscreteLaplace
            release = aggregator.release(masked_aggregates, budget=budget,
                                         epsilon_count=eps_count, epsilon_sum=eps_sum,
                                         min_group_size=grant.min_group_size,
                                         mechanism=mechanism)
            record.epsilon_micro = round(release.epsilon * 10**6)
        except ha.BudgetExhausted as exc:
            raise Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, str(exc)) from None
        except ha.InvalidCiphertext as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                          f"masked aggregates refused: {exc}") from None
        except ha.AggregateError as exc:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, str(exc)) from None
        return release, (eps_count, eps_sum)
