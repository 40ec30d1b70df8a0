"""End to end: real `shuqiao serve` processes on ephemeral ports over mutual TLS.

The HRSS node registers its registry through the CLI; the fund centre asks through the
CLI; answers are compared with the plain set intersection, and both query logs and all
node logs are checked to hold no identifier.
"""
from __future__ import annotations

import csv

import pytest
import sqlalchemy as sa

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("e2e"))
    fx.start(s)
    r = fx.register(s)
    assert "registered flexible_workers version 1: 3000 rows" in r.stdout
    yield s
    s.fed.close()


def read_result(path):
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def test_membership_answers_equal_the_plain_intersection(scenario, tmp_path):
    out = tmp_path / "result.csv"
    r = fx.query(scenario, out, check=True)
    rows = read_result(out)
    assert len(rows) == len(scenario.applicants)
    registry = set(scenario.registry)
    for row in rows:
        assert (row["结果"] == "是") == (row["身份证号"] in registry), row["行号"]
    assert sum(r["结果"] == "是" for r in rows) == len(scenario.applicants) // 2
    assert "200 in hrss.flexible_workers v1" in r.stdout


def test_select_difference_writes_only_rows_not_in_the_dataset(scenario, tmp_path):
    out = tmp_path / "difference.csv"
    fx.query(scenario, out, "--select", "difference", check=True)
    rows = read_result(out)
    assert len(rows) == len(scenario.applicants) // 2
    assert not {r["身份证号"] for r in rows} & set(scenario.registry)


def test_both_nodes_log_the_query_with_metadata_only(scenario, tmp_path):
    out = tmp_path / "r.csv"
    fx.query(scenario, out, check=True)
    logs = {}
    for node in ("hrss", "fund"):
        engine = sa.create_engine(f"sqlite:///{scenario.fed.nodes[node].directory / 'node.db'}")
        with engine.connect() as conn:
            logs[node] = [dict(r._mapping) for r in conn.execute(sa.text("SELECT * FROM query_log"))]
        engine.dispose()
    answered = [e for e in logs["hrss"] if e["outcome"] == "answered"]
    asked = {e["query_id"]: e for e in logs["fund"] if e["outcome"] == "answered"}
    assert answered and all(e["query_id"] in asked for e in answered)
    for e in answered:
        assert e["role"] == "answerer" and e["asker"] == "fund" and e["purpose"] == fx.PURPOSE
        assert e["elements"] == len(scenario.applicants) and e["matched"] is None
        assert asked[e["query_id"]]["matched"] == len(scenario.applicants) // 2
    # No identifier anywhere: query logs, node logs, serve output.
    blob = repr(logs)
    for node in scenario.fed.nodes.values():
        log_file = node.directory / "serve.log"
        if log_file.exists():
            blob += log_file.read_text(errors="replace")
    for person in scenario.applicants + scenario.registry[:500]:
        assert person not in blob and person[:14] not in blob


def test_invalid_rows_are_reported_with_line_numbers_not_asked(scenario, tmp_path):
    src = tmp_path / "dirty.csv"
    good = scenario.registry[0]
    bad_check = good[:17] + ("0" if good[17] != "0" else "1")
    fx.write_csv(src, ["申请编号", "身份证号"], [["A1", good], ["A2", bad_check], ["A3", "19900101"],
                                           ["A4", good.lower()], ["A5", " "]])
    out = tmp_path / "dirty-result.csv"
    r = scenario.fed.cli("query", "membership", "--config", scenario.cfg("fund"), "--partner", "hrss",
                         "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(src),
                         "--id-column", "身份证号", "--out", str(out))
    assert "1 distinct asked" in r.stdout and "3 invalid" in r.stdout
    rows = read_result(out)
    assert [(row["行号"], row["结果"]) for row in rows] == [
        ("2", "是"), ("3", "无效"), ("4", "无效"), ("5", "是"), ("6", "无效")]
    assert [row["说明"] for row in rows] == ["", "bad check digit", "wrong length", "", "empty"]
    rejected = read_result(out.with_suffix(".rejected.csv"))
    assert [(x["行号"], x["原因"]) for x in rejected] == [
        ("3", "bad check digit"), ("4", "wrong length"), ("6", "empty")]
    assert bad_check not in r.stdout + r.stderr


def test_dataset_list_show_and_a_new_version(scenario, tmp_path):
    cfg = scenario.cfg("hrss")
    listing = scenario.fed.cli("dataset", "list", "--config", cfg).stdout
    assert "flexible_workers" in listing and "3000" in listing
    show = scenario.fed.cli("dataset", "show", "--config", cfg, "flexible_workers").stdout
    assert "grant: fund for flexible-worker-deposit" in show and "v1 active" in show
    offered = scenario.fed.cli("query", "datasets", "--config", scenario.cfg("fund"),
                               "--partner", "hrss").stdout
    assert "flexible_workers" in offered and "ungranted" not in offered


def test_missing_id_column_is_a_clear_error(scenario, tmp_path):
    r = fx.query(scenario, tmp_path / "x.csv")
    assert r.returncode == 0
    src = scenario.applicants_csv
    r = scenario.fed.cli("query", "membership", "--config", scenario.cfg("fund"), "--partner", "hrss",
                         "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(src),
                         "--id-column", "sfzh", "--out", str(tmp_path / "y.csv"), check=False)
    assert r.returncode == 2
    assert "'sfzh' not found" in r.stderr and "身份证号" in r.stderr
    assert not (tmp_path / "y.csv").exists()
