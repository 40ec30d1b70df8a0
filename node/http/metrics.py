"""`/metrics`: Prometheus text format, read at scrape time from the node's database.

Who may scrape: a holder of a *metrics* token (`[http] metrics_tokens`), or of an
auditor token. A scraper keeps its token in a config file on a monitoring host, so it
gets a role of its own that opens `/metrics` and nothing else (not the ledger's
entries, not the admin routes); an auditor, who may read the ledger anyway, may read
these totals too.

Series (labels are configured names only, "other" for anything else; node/policy/metrics.py):

    shuqiao_queries_total{role,kind,partner,dataset,purpose,outcome}        counter
    shuqiao_query_elements_total{role,kind,partner,dataset,purpose,outcome} counter
    shuqiao_query_duration_seconds{role,kind}                               histogram
    shuqiao_ledger_entries                                                  gauge
    shuqiao_witness_lag_entries{witness}         this node's entries not yet under a head
                                                 that partner cosigned
    shuqiao_quota_remaining_elements{dataset,partner,window}   daily, monthly, epoch
    shuqiao_dp_budget_remaining{dataset,partner}               epsilon left this key epoch
    shuqiao_ledger_conflicts_total, shuqiao_ledger_open_conflicts,
    shuqiao_witness_rounds_total{partner,result}  (this process: node/ledger/alarms.py)

Queries come from the running totals kept with the query log (both sides: asked by a
`shuqiao query` process or answered by `shuqiao serve`); every gauge is one or two
indexed reads per partner or grant, so a scrape stays cheap whatever the log's length.
"""
from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator

from fastapi import APIRouter, Depends
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from sqlalchemy import Connection, func, select

from node.core.service_config import Role
from node.http.auth import Authenticator
from node.runtime.context import NodeContext

QUERY_LABELS = ["role", "kind", "partner", "dataset", "purpose", "outcome"]


def _query_families(rows: list[dict]) -> Iterator:
    from node.policy.querylog import LATENCY_BUCKETS
    queries = CounterMetricFamily("shuqiao_queries", "Queries asked or answered by this node, "
                                  "as recorded in its query log", labels=QUERY_LABELS)
    elements = CounterMetricFamily("shuqiao_query_elements", "Elements of those queries "
                                   "(as charged in the query log)", labels=QUERY_LABELS)
    sums: dict[tuple, list[int]] = defaultdict(lambda: [0, 0])
    buckets: dict[tuple, list[int]] = defaultdict(lambda: [0] * (len(LATENCY_BUCKETS) + 1))
    seconds: dict[tuple, float] = defaultdict(float)
    for r in rows:
        key = tuple(r[k] for k in QUERY_LABELS)
        sums[key][0] += r["queries"]
        sums[key][1] += r["elements"]
        kind = (r["role"], r["kind"])
        buckets[kind][min(r["bucket"], len(LATENCY_BUCKETS))] += r["queries"]
        seconds[kind] += r["seconds"]
    for key, (n, e) in sorted(sums.items()):
        queries.add_metric(list(key), n)
        elements.add_metric(list(key), e)
    latency = HistogramMetricFamily("shuqiao_query_duration_seconds", "Time from a query's "
                                    "start to its record, by role and kind",
                                    labels=["role", "kind"])
    for kind, counts in sorted(buckets.items()):
        bounds = [f"{b:g}" for b in LATENCY_BUCKETS] + ["+Inf"]
        cumulative = [sum(counts[:i + 1]) for i in range(len(counts))]
        latency.add_metric(list(kind), list(zip(bounds, cumulative)), seconds[kind])
    yield from (queries, elements, latency)


def _witness_lag(ctx: NodeContext, conn: Connection, size: int) -> GaugeMetricFamily:
    from node.ledger.tables import witness_cosignatures
    c = witness_cosignatures.c
    lag = GaugeMetricFamily("shuqiao_witness_lag_entries", "Entries of this node's ledger "
                            "not yet covered by a head the partner cosigned", labels=["witness"])
    me = ctx.config.node.id
    for partner in ctx.config.partners:
        cosigned = conn.execute(select(func.max(c.size)).where(
            c.log_node == me, c.witness == partner.id)).scalar() or 0
        lag.add_metric([partner.id], max(0, size - cosigned))
    return lag


def _allowances(ctx: NodeContext, conn: Connection) -> Iterator:
    from node.policy.usage import all_use
    quota = GaugeMetricFamily("shuqiao_quota_remaining_elements", "Elements a partner may "
                              "still have evaluated before a quota refuses it",
                              labels=["dataset", "partner", "window"])
    budget = GaugeMetricFamily("shuqiao_dp_budget_remaining", "Differential-privacy epsilon "
                               "a partner has left in the current key epoch",
                               labels=["dataset", "partner"])
    for use in all_use(conn, ctx.config, ctx.clock.now()):
        for w in use.windows:
            if w.limit is not None and (w.name != "epoch" or use.epoch is not None):
                quota.add_metric([use.dataset, use.partner, w.name], max(0, w.limit - w.used))
        if use.dp_budget is not None and use.epoch is not None:
            budget.add_metric([use.dataset, use.partner], max(0.0, use.dp_budget - use.dp_spent))
    yield from (quota, budget)


class NodeCollector:
    """The node's series, computed from its database when scraped."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx

    def collect(self) -> Iterator:
        from node.policy.querylog import totals
        with self.ctx.engine.connect() as conn:
            yield from _query_families(totals(conn))
            size = self.ctx.ledger.size(conn)
            entries = GaugeMetricFamily("shuqiao_ledger_entries", "Entries in this node's ledger")
            entries.add_metric([], size)
            yield entries
            yield _witness_lag(self.ctx, conn, size)
            yield from _allowances(self.ctx, conn)


class _Process:
    """The process-wide series (alarms, witnessing rounds), served beside the node's."""

    def collect(self) -> Iterator:
        from node.ledger.alarms import REGISTRY
        yield from REGISTRY.collect()


def metrics_router(ctx: NodeContext, auth: Authenticator) -> APIRouter:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(ctx))
    registry.register(_Process())
    router = APIRouter()

    @router.get("/metrics", dependencies=[Depends(auth.require(Role.METRICS, Role.AUDITOR))], include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return router
