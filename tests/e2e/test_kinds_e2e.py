"""Labeled and predicate queries, incremental refresh and authorisation, between real nodes."""
from __future__ import annotations

import csv
import random

import grpc
import pytest
import sqlalchemy as sa

from adapters import IdType, encode
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("kinds"), registry_size=1200, applicants=300,
                 grant={"kinds": ["membership", "labeled", "predicate"],
                        "predicate_columns": ["缴费月数"], "label_attributes": ["缴费月数", "所属区"]})
    fx.start(s)
    s.fed.cli("dataset", "add", "--config", s.cfg("hrss"), "--name", "flexible_workers",
              "--csv", str(s.registry_csv), "--id-column", "公民身份号码",
              "--attribute", "缴费月数", "--attribute", "所属区")
    with open(s.registry_csv, newline="", encoding="gb18030") as f:
        s.months = {r["公民身份号码"]: int(r["缴费月数"]) for r in csv.DictReader(f)}
    yield s
    s.fed.close()


def rows(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_labeled_query_opens_attributes_of_matched_rows_only(scenario, tmp_path):
    out = tmp_path / "labeled.csv"
    fx.query(scenario, out, "--kind", "labeled", check=True)
    result = rows(out)
    assert len(result) == len(scenario.applicants)
    for r in result:
        person = r["身份证号"]
        if person in scenario.months:
            assert r["结果"] == "是"
            assert r["缴费月数"] == str(scenario.months[person]) and r["所属区"] == "天宁区"
        else:
            assert r["结果"] == "否" and r["缴费月数"] == ""


def test_predicate_query_equals_plain_filtering(scenario, tmp_path):
    out = tmp_path / "pred.csv"
    r = fx.query(scenario, out, "--kind", "predicate", "--predicate", "缴费月数>=6.0", check=True)
    assert "v1" in r.stdout
    for row in rows(out):
        months = scenario.months.get(row["身份证号"])
        assert (row["结果"] == "是") == (months is not None and months >= 6)
    # the canonical predicate text is what both sides record
    engine = sa.create_engine(f"sqlite:///{scenario.fed.nodes['hrss'].directory / 'node.db'}")
    with engine.connect() as conn:
        recorded = conn.execute(sa.text(
            "SELECT predicate FROM query_log WHERE kind = 'predicate'")).scalars().all()
    engine.dispose()
    assert recorded and set(recorded) == {"缴费月数 >= 6"}


@pytest.mark.parametrize("text, message", [
    ("所属区 == \"天宁区\"", "所属区"),
    ("__import__('os')", "predicate refused"),
])
def test_predicates_outside_the_policy_are_refused(scenario, tmp_path, text, message):
    r = fx.query(scenario, tmp_path / "x.csv", "--kind", "predicate", "--predicate", text)
    assert r.returncode == 1 and message in r.stderr
    assert not (tmp_path / "x.csv").exists()


def test_labels_of_unmatched_rows_cannot_be_opened(scenario):
    """The fund centre holds every sealed label after a sync, but opens only what it asked."""
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    from node.asker.streams import load_arrays, dataset_info, sync_tag_table
    from node.asker import membership as asker
    from node.datasets.tag_tables import label_context
    from protocols import labels, oprf
    ctx = NodeContext(load_config(scenario.fed.nodes["fund"].config_path))
    try:
        stub = pb_grpc.MembershipStub(asker.partner_channel(ctx, "hrss"))
        info = dataset_info(stub, "hrss", "flexible_workers", 30)
        table = load_arrays(ctx, sync_tag_table(ctx, stub, "hrss", info))
        context = label_context("hrss", "fund", "flexible_workers", info.epoch)
        # an OPRF output of someone not in the registry opens no label at all
        outsider = [p for p in scenario.applicants if p not in scenario.months][0]
        rogue_output = oprf.evaluate(oprf.OprfSecretKey.generate(), [encode(IdType.CN_RESIDENT_ID, outsider)])[0]
        for sealed in table.labels[:200]:
            with pytest.raises(labels.LabelError):
                labels.open_label(rogue_output, sealed.tobytes(), context)
        assert len({len(x.tobytes()) for x in table.labels}) == 1   # fixed size: lengths leak nothing
    finally:
        ctx.close()


def test_refresh_syncs_a_delta_and_answers_the_new_version(scenario, tmp_path):
    s = scenario
    rng = random.Random(5)
    removed = rng.sample([p for p in s.applicants if p in s.months], 10)
    added = [p for p in s.applicants if p not in s.months][:15]
    fx.write_csv(tmp_path / "remove.csv", ["公民身份号码"], [[p] for p in removed])
    fx.write_csv(tmp_path / "add.csv", ["公民身份号码", "缴费月数", "所属区"], [[p, 7, "武进区"] for p in added])
    fx.query(s, tmp_path / "before.csv", check=True)   # the fund centre holds version 1
    r = s.fed.cli("dataset", "update", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                  "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"),
                  "--remove", str(tmp_path / "remove.csv"))
    assert "version 2 from v1: 1205 rows (+15 -10)" in r.stdout
    fx.query(s, tmp_path / "after.csv", "--kind", "labeled", check=True)
    after = {row["身份证号"]: row for row in rows(tmp_path / "after.csv")}
    for p in removed:
        assert after[p]["结果"] == "否"
    for p in added:
        assert after[p]["结果"] == "是" and after[p]["所属区"] == "武进区"
    # the fund centre applied a delta: version 2 was not sent whole
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes['fund'].directory / 'node.db'}")
    with engine.connect() as conn:
        versions = conn.execute(sa.text(
            "SELECT version, row_count FROM peer_tag_tables WHERE predicate = '' ORDER BY version")).all()
    engine.dispose()
    assert [tuple(v) for v in versions] == [(1, 1200), (2, 1205)]
    log = (s.fed.nodes["hrss"].directory / "serve.log").read_text()
    assert "delta" in log


def test_authorisation_references_are_required_and_bound(scenario, tmp_path):
    src = tmp_path / "auth.csv"
    people = scenario.applicants[:4]
    fx.write_csv(src, ["身份证号", "授权编号"], [[people[0], "GJJ-2026-001"], [people[1], ""],
                                              [people[2], "GJJ-2026-003"], [people[3], "GJJ-2026-004"]])
    out = tmp_path / "auth-result.csv"
    r = scenario.fed.cli("query", "membership", "--config", scenario.cfg("fund"), "--partner", "hrss",
                         "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(src),
                         "--id-column", "身份证号", "--auth-column", "授权编号", "--out", str(out))
    assert "3 distinct asked" in r.stdout
    rejected = rows(out.with_suffix(".rejected.csv"))
    assert [(x["行号"], x["原因"]) for x in rejected] == [("3", "missing authorisation reference")]
    from node.policy.consent import consent_digest
    expected = consent_digest(zip([encode(IdType.CN_RESIDENT_ID, p) for p in (people[0], people[2], people[3])],
                                  ["GJJ-2026-001", "GJJ-2026-003", "GJJ-2026-004"]))
    engine = sa.create_engine(f"sqlite:///{scenario.fed.nodes['fund'].directory / 'node.db'}")
    with engine.connect() as conn:
        digests = conn.execute(sa.text("SELECT authorisation_digest FROM query_log")).scalars().all()
    engine.dispose()
    assert expected in digests
