"""`shuqiao rule run`: multi-agency rules over partners and a local source, with provenance;
local terms first, so a partner is asked only about applicants they left undecided."""
from __future__ import annotations

import csv
import random

import pytest

from . import fixtures as fx

pytestmark = pytest.mark.e2e

RULES = """
[rules]
flexible_worker_subsidy = 'hrss.flexible_workers[缴费月数 >= 6] and not fund.depositors and age < 35'

[purposes]
flexible_worker_subsidy = "flexible-worker-deposit"
"""

# Two agencies, each granting its own purpose: the rule names one per partner.
CROSS_RULES = """
[rules]
housing_support = '(edu.graduates and age < 30) or (hrss.flexible_workers[缴费月数 >= 6] and age >= 30 and age < 45)'

[purposes]
housing_support = { edu = "graduate-housing-support", hrss = "flexible-worker-deposit" }
"""


node_log = fx.query_log  # a node's query log, oldest first


def asked_by(s, node: str) -> list[int]:
    """Elements of every query the agency answered (its own query log)."""
    return [r["elements"] for r in node_log(s, node) if r["role"] == "answerer" and r["outcome"] == "answered"]


def decisions_of(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


def months_of(s) -> dict[str, int]:
    with open(s.registry_csv, newline="", encoding="gb18030") as f:
        return {r["公民身份号码"]: int(r["缴费月数"]) for r in csv.DictReader(f)}


def test_rule_decisions_equal_the_plain_computation(tmp_path):
    s = fx.build(tmp_path, registry_size=800, applicants=200,
                 grant={"kinds": ["membership", "predicate"], "predicate_columns": ["缴费月数"]})
    s.fed.add_node("fund", partners=[{"id": "hrss"}], datasets=[{"name": "depositors"}])
    rng = random.Random(11)
    depositors = set(rng.sample(s.applicants, 60))
    fx.write_csv(tmp_path / "depositors.csv", ["sfzh"], [[p] for p in sorted(depositors)])
    months = months_of(s)
    ages = {p: rng.randint(20, 50) for p in s.applicants}
    fx.write_csv(tmp_path / "applicants.csv", ["身份证号", "age"], [[p, ages[p]] for p in s.applicants])
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    with s.fed:
        fx.start(s)
        s.fed.cli("dataset", "add", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                  "--csv", str(s.registry_csv), "--id-column", "公民身份号码", "--attribute", "缴费月数")
        s.fed.cli("dataset", "add", "--config", s.cfg("fund"), "--name", "depositors",
                  "--csv", str(tmp_path / "depositors.csv"), "--id-column", "sfzh")
        r = s.fed.cli("rule", "run", "--config", s.cfg("fund"), "flexible_worker_subsidy",
                      "--rules", str(tmp_path / "rules.toml"), "--input", str(tmp_path / "applicants.csv"),
                      "--id-column", "身份证号", "--out", str(tmp_path / "decisions.csv"), "--lang", "en")
    decisions = decisions_of(tmp_path / "decisions.csv")
    assert len(decisions) == len(s.applicants)
    logged = {r["query_id"] for r in node_log(s, "fund")}
    # the agency was asked about exactly those the local terms left open
    passing = [p for p in s.applicants if p not in depositors and ages[p] < 35]
    assert 0 < len(passing) < len(s.applicants)
    assert asked_by(s, "hrss") == [len(passing)]
    assert f"({len(passing)} asked)" in r.stdout
    for d in decisions:
        p = d["身份证号"]
        expected = months.get(p, 0) >= 6 and p not in depositors and ages[p] < 35
        assert (d["decision"] == "eligible") == expected, p[:0] + d["line"]
        qids = set(filter(None, d["query_ids"].split(";")))
        assert qids <= logged and d["explanation"]
        if expected:  # every source was cited: the partner's answer and the local lookup
            assert len(qids) == 2
        elif p in passing:  # asked, and the partner's answer decided
            assert len(qids) == 1 and "hrss.flexible_workers" in d["explanation"]
        else:  # decided here: the partner is neither cited nor was it asked
            assert "hrss.flexible_workers" not in d["explanation"]
    assert "eligible" in r.stdout


def test_a_cross_agency_rule_states_each_partner_its_own_purpose(tmp_path):
    s = fx.build(tmp_path, registry_size=600, applicants=160,
                 grant={"kinds": ["membership", "predicate"], "predicate_columns": ["缴费月数"]})
    rng = random.Random(5)
    graduates = sorted(set(rng.sample(s.applicants, 70)) | set(fx.people(rng, 200)))
    fx.write_csv(tmp_path / "graduates.csv", ["学号身份证"], [[p] for p in graduates])
    s.fed.add_node("edu", partners=[{"id": "fund"}], datasets=[{"name": "graduates", "grants": [
        {"partner": "fund", "purposes": ["graduate-housing-support"]}]}])
    s.fed.add_node("fund", partners=[{"id": "hrss"}, {"id": "edu"}])
    ages = {p: rng.randint(20, 55) for p in s.applicants}
    fx.write_csv(tmp_path / "applicants.csv", ["身份证号", "age"], [[p, ages[p]] for p in s.applicants])
    (tmp_path / "rules.toml").write_text(CROSS_RULES, encoding="utf-8")
    with s.fed:
        fx.start(s)
        s.fed.start("edu")
        s.fed.set_partner_address("fund", "edu", s.fed.nodes["edu"].address)
        fx.register(s)
        s.fed.cli("dataset", "add", "--config", s.cfg("edu"), "--name", "graduates",
                  "--csv", str(tmp_path / "graduates.csv"), "--id-column", "学号身份证")
        s.fed.cli("rule", "run", "--config", s.cfg("fund"), "housing_support",
                  "--rules", str(tmp_path / "rules.toml"), "--input", str(tmp_path / "applicants.csv"),
                  "--id-column", "身份证号", "--out", str(tmp_path / "decisions.csv"))
    young = [p for p in s.applicants if ages[p] < 30]
    middle = [p for p in s.applicants if 30 <= ages[p] < 45]
    assert young and middle and len(young) + len(middle) < len(s.applicants)
    assert asked_by(s, "edu") == [len(young)]
    assert asked_by(s, "hrss") == [len(middle)]
    purposes = {(r["answerer"], r["purpose"]) for r in node_log(s, "fund") if r["role"] == "asker"}
    assert purposes == {("edu", "graduate-housing-support"), ("hrss", "flexible-worker-deposit")}
    months, grads = months_of(s), set(graduates)
    for d in decisions_of(tmp_path / "decisions.csv"):
        p, age = d["身份证号"], ages[d["身份证号"]]
        expected = (p in grads and age < 30) or (months.get(p, 0) >= 6 and 30 <= age < 45)
        assert (d["判定"] == "符合") == expected, d["行号"]  # the default: Chinese words
