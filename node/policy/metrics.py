"""Query metrics: running totals of the query log, labelled by configured names only.

Every query this node asks or answers is counted where its query-log row is written
(`QueryRecord.write`, node/policy/querylog.py), in the same transaction: one row of
`query_metrics` per label set and latency bucket holds how many queries, elements and
seconds. `/metrics` (node/http/metrics.py) reads those few rows when it is scraped, so
the queries a `shuqiao query` process asks count as well as those `shuqiao serve`
answers, a restart loses nothing, and the totals agree with the log by construction.

A label holds only a name some configuration gave: partner and node ids, dataset names,
purpose codes, query kinds, outcomes. On the answering side the dataset and purpose
must be declared in this node's config; on the asking side they are the partner's, and
only its answer vouches for them (a refused or failed query may name anything the
operator typed). Anything else is counted as "other", so neither an identifier nor a
raw value can reach a label, and the number of series stays bounded by the config.
"""
from __future__ import annotations

import bisect
import functools
import re
from typing import TYPE_CHECKING

from sqlalchemy import Connection, select
from sqlalchemy.dialects import mysql, postgresql, sqlite

from node.core.config import DATASET_NAME, PURPOSE, NodeConfig, QueryKindName
from node.storage.schema import query_metrics

if TYPE_CHECKING:
    from node.policy.querylog import QueryRecord

__all__ = ["LATENCY_BUCKETS", "OTHER", "ROLES", "labels", "count_query", "totals"]

# Upper bounds (seconds) of the latency histogram's buckets; a last one, +Inf, is implied.
# From a cached-table membership query (tens of milliseconds) to a million-row aggregate.
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)
OTHER = "other"
ROLES = ("asker", "answerer", "local")
KINDS = frozenset(k.value for k in QueryKindName)
_KEY = ("role", "kind", "partner", "dataset", "purpose", "outcome", "bucket")
_DATASET, _PURPOSE = re.compile(DATASET_NAME), re.compile(PURPOSE)


def bucket_of(seconds: float) -> int:
    """Index of the smallest bucket holding `seconds` (len(LATENCY_BUCKETS): +Inf)."""
    return bisect.bisect_left(LATENCY_BUCKETS, seconds)


def _configured_purposes(config: NodeConfig) -> set[str]:
    return {code for d in config.datasets for g in d.grants for code in g.purpose_codes}


def _vouched(value: str, pattern: re.Pattern) -> bool:
    """A partner's name, as its answer confirmed it: well formed and not identifier-shaped."""
    from node.ledger.canonical import clean_text
    return bool(pattern.fullmatch(value)) and clean_text(value, 64) == value


def labels(config: NodeConfig, record: QueryRecord) -> dict[str, str]:
    """The record's metric labels: configured names, "other" for anything else.

    The outcome is one of querylog.OUTCOMES: `QueryRecord.write` refuses any other.
    """
    answering = record.role == "answerer"
    partner = record.asker if answering else record.answerer
    if partner not in {p.id for p in config.partners} | {config.node.id}:
        partner = OTHER
    if record.role == "asker":  # the partner's names: vouched for only by its answer
        answered = record.outcome == "answered"
        dataset = record.dataset if answered and _vouched(record.dataset, _DATASET) else OTHER
        purpose = record.purpose if answered and _vouched(record.purpose, _PURPOSE) else OTHER
    else:
        dataset = record.dataset if config.dataset(record.dataset) is not None else OTHER
        purpose = record.purpose if record.purpose in _configured_purposes(config) else OTHER
    return {"role": record.role if record.role in ROLES else OTHER,
            "kind": record.kind if record.kind in KINDS else OTHER,
            "partner": partner, "dataset": dataset, "purpose": purpose,
            "outcome": record.outcome}


def count_query(conn: Connection, config: NodeConfig, record: QueryRecord,
                seconds: float) -> dict[str, str]:
    """Add one query to the totals, in the caller's transaction (the query-log row's);
    returns its labels."""
    named = labels(config, record)
    add = {"queries": 1, "elements": int(record.elements), "seconds": float(seconds)}
    conn.execute(_upsert(conn.dialect.name, tuple(add)), {**named, "bucket": bucket_of(seconds), **add})
    return named


@functools.lru_cache(maxsize=8)
def _upsert(dialect: str, summed: tuple[str, ...]):
    """INSERT, or add to the existing row of the same labels: one atomic statement, built
    once per dialect (its values are bound per execution, so it is compiled once too)."""
    t = query_metrics
    if dialect in ("sqlite", "postgresql"):
        stmt = (sqlite if dialect == "sqlite" else postgresql).insert(t)
        return stmt.on_conflict_do_update(index_elements=list(_KEY),
                                          set_={c: t.c[c] + stmt.excluded[c] for c in summed})
    if dialect in ("mysql", "mariadb"):
        stmt = mysql.insert(t)
        return stmt.on_duplicate_key_update({c: t.c[c] + stmt.inserted[c] for c in summed})
    raise ValueError(f"unsupported database dialect for query metrics: {dialect}")


def totals(conn: Connection) -> list[dict]:
    """Every row of the totals: labels, bucket, queries, elements, seconds."""
    return [dict(r._mapping) for r in conn.execute(select(query_metrics))]
