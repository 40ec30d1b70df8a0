"""The agency's side of aggregate queries: admission and policy around the session.

The protocol (shuffled match, BFV columns, noised release) is
protocols/aggregate.AggregateAnswerer; this adapter admits the query, checks the
columns against the grant, reads the rows taking part, builds the release plan from
the grant (protocols/dp.ReleasePlan: the grant's ``dp_epsilon``, reserved at
admission) and moves the messages. The session's per-query secrets (the shuffle key
and permutation, the BFV secret key) live for the stream's lifetime only, keyed by
nothing a peer can name: never stored, pickled or logged. See
node/agency/statistics.py for what each side learns.
"""
from __future__ import annotations

from protocols.dp import ReleasePlan

from node.core.errors import InvalidRequest, NotServed
from node.datasets.statistics_rows import (
    MAX_GROUPS, aggregate_rows, hashed_rows, select_packed, version_columns,
)
from node.policy.querylog import QueryRecord
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.transport.chunks import chunk_size

OPS = {spb.AGGREGATE_OP_COUNT: "count", spb.AGGREGATE_OP_SUM: "sum", spb.AGGREGATE_OP_MEAN: "mean"}


class AggregateRpc:
    def Aggregate(self, request_iterator, context):
        return self._stream(request_iterator, context, "aggregate", self._aggregate)

    def _aggregate(self, requests, peer: str, record: QueryRecord):
        from protocols.aggregate import AggregateAnswerer  # TenSEAL loads only where aggregates run
        h, _, grant, version = self._admit(next(requests, None), peer, record, "aggregate",
                                           spb.STATISTICS_KIND_AGGREGATE)
        with_sums = self._aggregate_columns(h, grant, version)
        rows = self._aggregate_rows(h, grant, version)
        plan = ReleasePlan.for_query(grant.dp_epsilon, with_sums)
        pool = self.ctx.pool
        hashed = select_packed(hashed_rows(self.ctx, version, version_columns(self.ctx, version)),
                               rows.positions, 32)
        session = AggregateAnswerer(
            hashed, rows.values, rows.groups, rows.group_names, value_bound=rows.value_bound,
            unusable_rows=rows.unusable, elements=h.total_elements, plan=plan,
            budget=plan.budget(peer, h.dataset, h.epoch), min_group_size=grant.min_group_size,
            chunk_bytes=chunk_size(self.cfg.grpc.max_message_bytes), mapper=pool.map,
            columns_at_once=2 * pool.workers)
        yield from self._serve(session, requests, record, spb.AggregateResponse)

    def _aggregate_columns(self, h, grant, version) -> bool:
        """The asked operations and columns against the grant; whether sums are asked."""
        ops = {OPS.get(op) for op in h.ops} or {"count"}
        if None in ops:
            raise InvalidRequest("unknown aggregate operation")
        with_sums = bool(ops & {"sum", "mean"})
        if with_sums and not h.value_column:
            raise InvalidRequest("sum and mean need a value column")
        for column, role in ((h.value_column, "an aggregate value"),
                             (h.group_by, "a group-by column")):
            if column:
                self._check_column(column, grant.aggregate_columns, version, h.dataset, role)
        if with_sums and grant.dp_epsilon is not None and grant.aggregate_value_bound is None:
            raise NotServed(f"noised sums on {h.dataset!r} need the grant's aggregate_value_bound "
                            "(the largest value one row may add); ask the agency to set it")
        return with_sums

    def _aggregate_rows(self, h, grant, version):
        rows = aggregate_rows(version_columns(self.ctx, version), h.value_column, h.group_by,
                              grant.aggregate_value_bound)
        if len(rows.group_names) > MAX_GROUPS:
            raise NotServed(f"column {h.group_by!r} has more than {MAX_GROUPS} distinct values")
        if not len(rows.positions):
            raise NotServed(f"no row of {h.dataset!r} has a usable value in {h.value_column!r}")
        return rows
