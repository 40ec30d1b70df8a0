"""Result files and the command line an operator reads, between real `shuqiao serve` nodes.

One small federation for the module: HRSS grants the fund centre membership, predicate,
cardinality and (noised) aggregate queries on its registry. The fund centre's applicant list has an
application number and a name beside each identifier, a few invalid identifiers and a
cell that looks like a spreadsheet formula.
"""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import openpyxl
import pytest

from node.core.config import load_config
from node.ledger import decode
from node.runtime.context import NodeContext

from . import fixtures as fx

pytestmark = pytest.mark.e2e

GRANT = {"kinds": ["membership", "predicate", "aggregate", "cardinality"], "predicate_columns": ["缴费月数"],
         "aggregate_columns": ["缴费月数", "所属区"], "dp_epsilon": 5.0, "dp_budget": 100,
         "aggregate_value_bound": 100, "min_group_size": 5}
BAD = {"A0003": "12345", "A0007": ""}  # application number -> an invalid identifier


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("results"), registry_size=400, applicants=60, grant=GRANT)
    rows = [[f"A{i:04d}", BAD.get(f"A{i:04d}", p), "=1+2" if i == 5 else f"申请人{i}"]
            for i, p in enumerate(s.applicants)]
    fx.write_csv(s.applicants_csv, ["申请编号", "身份证号", "姓名"], rows)
    s.expected = {r[0]: "无效" if r[0] in BAD else "是" if r[1] in set(s.registry) else "否"
                  for r in rows}
    fx.start(s)
    fx.register(s, "--attribute", "所属区")
    yield s
    s.fed.close()


def _csv(path) -> list[list[str]]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.reader(f))


def _dicts(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def _log(s) -> list[dict]:
    r = s.fed.cli("query", "log", "--config", s.cfg("fund"), "--json")
    return json.loads(r.stdout)


def test_the_formats_hold_the_same_answers_and_name_their_query(s, tmp_path):
    files = {ext: tmp_path / f"result{ext}" for ext in (".csv", ".xlsx", ".json", ".jsonl")}
    summaries = {ext: json.loads(fx.query(s, path, "--json", check=True).stdout)
                 for ext, path in files.items()}
    logged = {e["query_id"]: e for e in _log(s)}
    with NodeContext(load_config(s.cfg("fund"))) as ctx:
        ledger = dict(ctx.ledger.entries())
    facts = {".csv": json.loads((tmp_path / "result.csv.meta.json").read_text(encoding="utf-8")),
             ".jsonl": json.loads((tmp_path / "result.jsonl.meta.json").read_text(encoding="utf-8")),
             ".json": json.loads(files[".json"].read_text(encoding="utf-8"))["query"]}
    wb = openpyxl.load_workbook(files[".xlsx"])
    assert wb.sheetnames == ["结果", "查询信息"]
    info = {r[0]: r[1] for r in wb["查询信息"].iter_rows(values_only=True)}
    facts[".xlsx"] = {"query_id": info["查询编号"], "ledger_index": info["账本位置"]}
    for ext, fact in facts.items():  # the file, the command, the query log and the ledger agree
        qid, index = fact["query_id"], fact["ledger_index"]
        assert (summaries[ext]["query_id"], summaries[ext]["ledger_index"]) == (qid, index)
        assert logged[qid]["ledger_index"] == index and logged[qid]["role"] == "asker"
        entry = decode(ledger[index])
        assert (entry.query_id, entry.phase) == (qid, "completed")

    table = _csv(files[".csv"])
    assert table[0] == ["行号", "申请编号", "身份证号", "姓名", "结果", "说明"]
    assert {r[1]: r[4] for r in table[1:]} == s.expected
    sheet = [["" if v is None else str(v) for v in r] for r in wb["结果"].iter_rows(values_only=True)]
    assert sheet == table  # the workbook equals the CSV, the formula-like name included
    assert "=1+2" in {r[3] for r in table}
    doc = json.loads(files[".json"].read_text(encoding="utf-8"))
    lines = [json.loads(x) for x in files[".jsonl"].read_text(encoding="utf-8").splitlines()]
    for rows in (doc["rows"], lines):
        assert [[str(r[c]) for c in table[0]] for r in rows] == table[1:]


def test_english_headers_and_answers(s, tmp_path):
    out = tmp_path / "en.csv"
    fx.query(s, out, "--lang", "en", check=True)
    rows = _dicts(out)
    assert list(rows[0]) == ["line", "申请编号", "身份证号", "姓名", "answer", "note"]
    zh_to_en = {"是": "yes", "否": "no", "无效": "invalid"}
    assert {r["申请编号"]: r["answer"] for r in rows} == {k: zh_to_en[v] for k, v in s.expected.items()}
    assert {r["note"] for r in rows if r["answer"] == "invalid"} == {"wrong length", "empty"}
    assert list(_dicts(tmp_path / "en.rejected.csv")[0]) == ["line", "申请编号", "姓名", "reason"]


def test_rejected_rows_carry_the_other_columns_never_the_identifier(s, tmp_path):
    out = tmp_path / "r.xlsx"
    fx.query(s, out, check=True)
    wb = openpyxl.load_workbook(tmp_path / "r.rejected.xlsx")
    assert wb.sheetnames == ["未查询的行", "查询信息"]
    rows = list(wb["未查询的行"].iter_rows(values_only=True))
    assert rows[0] == ("行号", "申请编号", "姓名", "原因")
    assert {r[1]: r[3] for r in rows[1:]} == {"A0003": "wrong length", "A0007": "empty"}
    # A clean list: the rejects file is written all the same, headers only.
    clean = tmp_path / "clean.csv"
    fx.write_csv(clean, ["申请编号", "身份证号"], [[f"C{i}", p] for i, p in enumerate(s.registry[:12])])
    rejects = tmp_path / "none-rejected.csv"
    s.fed.cli("query", "cardinality", "--config", s.cfg("fund"), "--partner", "hrss",
              "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(clean),
              "--id-column", "身份证号", "--rejects", str(rejects))
    assert _csv(rejects) == [["行号", "申请编号", "原因"]]
    assert json.loads((tmp_path / "none-rejected.csv.meta.json").read_text())["kind"] == "cardinality"


def test_a_predicate_result_records_its_predicate(s, tmp_path):
    out = tmp_path / "p.json"
    fx.query(s, out, "--kind", "predicate", "--predicate", "缴费月数 >= 6", check=True)
    facts = json.loads(out.read_text(encoding="utf-8"))["query"]
    assert facts["kind"] == "predicate" and "缴费月数" in facts["predicate"] and "6" in facts["predicate"]
    assert facts["partner"] == "hrss" and facts["dataset"] == "flexible_workers" and facts["version"] == 1


def test_aggregate_figures_carry_their_noise_bounds(s, tmp_path):
    members = s.registry[:120]
    path = tmp_path / "depositors.csv"
    fx.write_csv(path, ["账号", "身份证号"], [[f"D{i}", p] for i, p in enumerate(members)])
    out = tmp_path / "figures.xlsx"
    r = s.fed.cli("query", "aggregate", "--config", s.cfg("fund"), "--partner", "hrss",
                  "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(path),
                  "--id-column", "身份证号", "--value", "缴费月数",
                  "--op", "count", "--op", "sum", "--op", "mean",
                  "--group-by", "所属区", "--out", str(out), "--json", check=False)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    wb = openpyxl.load_workbook(out)
    head, *rows = list(wb["统计"].iter_rows(values_only=True))
    assert head == ("所属区", "人数", "人数噪声上限(±)", "合计", "合计噪声上限(±)", "平均值",
                    "平均值噪声上限(±)", "已抑制")
    (group,) = rows
    assert group[0] == "天宁区" and group[7] == "否"
    assert group[2] == summary["count_noise_bound"] > 0 and group[4] == summary["sum_noise_bound"] > 0
    assert abs(group[1] - len(members)) <= group[2]  # the true count is within its bound
    assert group[6] is not None and group[6] > 0
    assert summary["groups"][0]["mean_noise_bound"] == group[6]
    info = {r[0]: r[1] for r in wb["查询信息"].iter_rows(values_only=True)}
    assert info["查询编号"] == summary["query_id"] and info["账本位置"] == summary["ledger_index"]
    assert info["差分隐私预算ε"] == pytest.approx(5.0)


def test_the_query_log_is_readable_at_80_columns(s, tmp_path):
    fx.query(s, tmp_path / "one-more.csv", check=True)
    latest = _log(s)[:8]
    r = s.fed.cli("query", "log", "--config", s.cfg("fund"), "--limit", "8", env={"COLUMNS": "80"})
    lines = r.stdout.splitlines()
    assert max(map(len, lines)) <= 80
    for e in latest:  # each entry's key fields on one line, whole; what it asked beneath
        (i,) = [i for i, x in enumerate(lines) if x.startswith(f"{e['query_id'][:8]} ")]
        assert f"#{e['ledger_index']}" in lines[i] and e["outcome"] in lines[i], lines[i]
        assert f"{e['kind']} → hrss" in lines[i], lines[i]
        assert f"{e['dataset']} v{e['version']}" in lines[i + 1], lines[i + 1]
    wide = s.fed.cli("query", "log", "--config", s.cfg("fund"), "--limit", "8", "--wide",
                     env={"COLUMNS": "400"}).stdout
    assert all(e["query_id"] in wide and e["purpose"] in wide for e in latest)


def _shuqiao(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "250", **(env or {})}, timeout=120)


def test_brackets_in_messages_and_help_are_printed_as_written(s, tmp_path):
    r = s.fed.cli("dataset", "add", "--config", s.cfg("hrss"), "--name", "not_declared",
                  "--csv", str(s.registry_csv), "--id-column", "公民身份号码", check=False)
    assert r.returncode != 0 and "add a [[datasets]]" in r.stderr, r.stderr
    bad = tmp_path / "bad.toml"
    bad.write_text((s.fed.nodes["fund"].config_path).read_text().replace('id = "fund"', 'id = "Fund"', 1))
    r = _shuqiao("query", "log", "--config", str(bad))
    assert r.returncode == 2 and "'^[a-z][a-z0-9_-]{1,62}$'" in r.stderr, r.stderr
    assert "[rules], [purposes]" in _shuqiao("rule", "run", "--help").stdout
    r = _shuqiao("token", "new")
    assert "add to [http] auditor_tokens" in r.stderr


def test_init_says_what_it_did_on_stdout(s):
    r = s.fed.cli("init", "--config", s.cfg("fund"))
    assert "node key already exists" in r.stdout and "database ready" in r.stdout
    assert "ledger key" in r.stdout and r.stderr == ""


def test_dataset_list_and_show_as_json(s):
    (v,) = json.loads(s.fed.cli("dataset", "list", "--config", s.cfg("hrss"), "--json").stdout)
    assert (v["dataset"], v["version"], v["rows"], v["status"]) == ("flexible_workers", 1, 400, "active")
    shown = json.loads(s.fed.cli("dataset", "show", "--config", s.cfg("hrss"), "flexible_workers",
                                 "--json").stdout)
    assert shown["versions"] == [v] and shown["declared"]["grants"][0]["partner"] == "fund"
