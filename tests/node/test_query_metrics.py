"""Query metrics: labels from configured names only, totals kept by one upsert per query
(SQLite and the real PostgreSQL server)."""
from __future__ import annotations

import pytest

from node.core.config import NodeConfig
from node.policy.querylog import LATENCY_BUCKETS, OTHER, bucket_of, count_query, labels, totals
from node.policy.querylog import QueryRecord
from node.runtime.context import open_store

PURPOSE = "flexible-worker-deposit"


def config(node: str = "hrss") -> NodeConfig:
    other = "fund" if node == "hrss" else "hrss"
    datasets = [{"name": "flexible_workers", "grants": [{"partner": other, "purposes": [PURPOSE]}]}]
    return NodeConfig.model_validate({
        "node": {"id": node}, "tls": {"ca": "ca.pem", "cert": "n.pem", "key": "n.key"},
        "partners": [{"id": other}], "datasets": datasets if node == "hrss" else []})


def answered(**kw) -> QueryRecord:
    fields = dict(query_id="q", role="answerer", asker="fund", answerer="hrss", kind="membership",
                  dataset="flexible_workers", purpose=PURPOSE, elements=10, outcome="answered")
    return QueryRecord(**{**fields, **kw})


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request, tmp_path):
    url = (f"sqlite:///{tmp_path / 'node.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_database_url"))
    engine = open_store(url)
    yield engine
    engine.dispose()


def test_the_answering_side_names_only_what_its_config_declares():
    cfg = config("hrss")
    assert labels(cfg, answered()) == {"role": "answerer", "kind": "membership", "partner": "fund",
                                       "dataset": "flexible_workers", "purpose": PURPOSE,
                                       "outcome": "answered"}
    refused = labels(cfg, answered(dataset="a110105194912310021", purpose="110105194912310021",
                                   asker="stranger", kind="x" * 40, outcome="refused"))
    assert {refused[k] for k in ("dataset", "purpose", "partner", "kind")} == {OTHER}


def test_the_asking_side_names_a_partners_dataset_only_once_it_answered():
    cfg = config("fund")
    asked = dict(role="asker", asker="fund", answerer="hrss")
    assert labels(cfg, answered(**asked))["dataset"] == "flexible_workers"
    assert labels(cfg, answered(**asked))["purpose"] == PURPOSE
    for outcome in ("refused", "failed", "aborted"):
        named = labels(cfg, answered(**asked, outcome=outcome, dataset="typo_set", purpose="typo"))
        assert (named["dataset"], named["purpose"], named["partner"]) == (OTHER, OTHER, "hrss")
    shaped = labels(cfg, answered(**asked, dataset="a110105194912310021", purpose="110105194912310021"))
    assert (shaped["dataset"], shaped["purpose"]) == (OTHER, OTHER)  # answered or not


def test_latency_buckets_hold_their_upper_bound():
    assert bucket_of(0.0) == 0 and bucket_of(LATENCY_BUCKETS[0]) == 0
    assert bucket_of(LATENCY_BUCKETS[0] + 1e-9) == 1
    assert bucket_of(10 ** 6) == len(LATENCY_BUCKETS)  # +Inf


def test_totals_add_up_per_label_set_and_bucket(engine):
    cfg = config("hrss")
    with engine.begin() as conn:
        count_query(conn, cfg, answered(elements=10), 0.01)
        count_query(conn, cfg, answered(elements=5), 0.02)
        count_query(conn, cfg, answered(elements=7), 42.0)
        count_query(conn, cfg, answered(outcome="refused", elements=0, purpose="nope"), 0.01)
    with engine.connect() as conn:
        rows = {(r["outcome"], r["purpose"], r["bucket"]): (r["queries"], r["elements"])
                for r in totals(conn)}
    assert rows == {("answered", PURPOSE, 0): (2, 15), ("answered", PURPOSE, bucket_of(42.0)): (1, 7),
                    ("refused", OTHER, 0): (1, 0)}


def test_a_rolled_back_query_is_not_counted(engine):
    with pytest.raises(RuntimeError), engine.begin() as conn:
        count_query(conn, config(), answered(), 0.1)
        raise RuntimeError("the query-log row failed to commit")
    with engine.connect() as conn:
        assert totals(conn) == []
