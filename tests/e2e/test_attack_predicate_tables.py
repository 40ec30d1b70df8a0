"""A partner floods PrepareTable with distinct predicates (issue 9, item 6).

Over the raw wire, the fund centre prepares one predicate table after another. The
agency keeps at most `max_tables` / `max_bytes` of them per partner (least recently
used go first), refuses builds beyond the grant's `daily_preparations`, and ledgers
every build. The tests run in order on one federation.
"""
from __future__ import annotations

import json
import sqlite3
import tomllib

import grpc
import pytest
import tomli_w

from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

from . import fixtures as fx
from .fixtures import blinded, channel_as, header

pytestmark = pytest.mark.e2e

MAX_TABLES, MAX_BYTES, DAILY = 4, 15_000, 22


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("predicates"), registry_size=300, applicants=20,
                 grant={"kinds": ["membership", "predicate"], "predicate_columns": ["缴费月数"],
                        "daily_preparations": DAILY})
    path = s.fed.nodes["hrss"].config_path
    config = tomllib.loads(path.read_text())
    config["predicate_tables"] = {"max_tables": MAX_TABLES, "max_bytes": MAX_BYTES}
    path.write_bytes(tomli_w.dumps(config).encode())
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def prepare(s, predicate: str) -> pb.DatasetInfo:
    with channel_as(s, "fund") as ch:
        return pb_grpc.MembershipStub(ch).PrepareTable(
            pb.PrepareTableRequest(dataset="flexible_workers", predicate=predicate), timeout=30)


def _db(s) -> sqlite3.Connection:
    return sqlite3.connect(s.fed.nodes["hrss"].directory / "node.db")


def cached(s) -> list[tuple[str, int]]:
    """(canonical predicate, bytes) of every predicate table kept for the fund centre."""
    with _db(s) as db:
        return db.execute("SELECT predicate, row_count * (tag_length + label_length) FROM tag_tables "
                          "WHERE partner = 'fund' AND predicate != ''").fetchall()


def prepared_entries(s) -> list[dict]:
    with _db(s) as db:
        rows = [json.loads(bytes(e)) for (e,) in db.execute(
            "SELECT entry FROM ledger_entries WHERE type = 'admin' ORDER BY idx")]
    return [r for r in rows if r["action"] == "predicate_prepared"]


FIRST = "缴费月数>=1"


def test_distinct_predicates_keep_a_bounded_cache_and_each_build_is_ledgered(scenario):
    infos = []
    for k in range(1, 21):
        info = prepare(scenario, f"缴费月数>={k}")
        infos.append(info)
        tables = cached(scenario)
        assert len(tables) <= MAX_TABLES
        assert sum(b for _, b in tables) <= max(MAX_BYTES, info.row_count * info.tag_length)
        assert info.predicate in {p for p, _ in tables}  # the table just prepared is kept
        if k == MAX_TABLES:  # the first tables are large: the byte bound holds fewer
            assert len(tables) < MAX_TABLES
    assert len(cached(scenario)) == MAX_TABLES  # the later, smaller tables fill the count
    entries = prepared_entries(scenario)
    assert len(entries) == 20
    assert len({e["details"]["predicate_digest"] for e in entries}) == 20
    for entry, info in zip(entries, infos):
        d = entry["details"]
        assert entry["subject"] == "flexible_workers" and d["partner"] == "fund"
        assert (d["version"], d["epoch"], d["rows"]) == (info.version, info.epoch, info.row_count)
        assert d["predicate"] == info.predicate
    # preparing a table still cached is no new build
    prepare(scenario, "缴费月数>=20")
    assert len(prepared_entries(scenario)) == 20


def test_query_on_an_evicted_predicate_table_must_prepare_it_again(scenario):
    first = prepared_entries(scenario)[0]["details"]["predicate"]
    assert first not in {p for p, _ in cached(scenario)}
    msgs = [header(scenario, kind=pb.QUERY_KIND_PREDICATE, predicate=first),
            pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(3))),
            pb.EvaluateRequest(finish=pb.Finish())]
    err = fx.refusal(scenario, msgs)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION and "prepare it first" in err.details()
    prepare(scenario, FIRST)  # rebuilt, counted and ledgered again
    assert len(prepared_entries(scenario)) == 21
    replies = fx.evaluate(scenario, [header(scenario, kind=pb.QUERY_KIND_PREDICATE, predicate=first),
                                     *msgs[1:]])
    assert replies[-1].summary.elements_evaluated == 3


def test_preparations_beyond_the_daily_limit_are_refused(scenario):
    prepare(scenario, "缴费月数>=40")  # build number DAILY
    assert len(prepared_entries(scenario)) == DAILY
    with pytest.raises(grpc.RpcError) as exc:
        prepare(scenario, "缴费月数>=41")
    assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert f"at most {DAILY} predicate tables" in exc.value.details()
    assert len(prepared_entries(scenario)) == DAILY
    assert prepare(scenario, "缴费月数>=40").row_count >= 0  # a cached table still answers
