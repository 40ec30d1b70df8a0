"""`shuqiao rule run`: a multi-agency rule over a partner and a local source, with provenance."""
from __future__ import annotations

import csv
import random

import pytest
import sqlalchemy as sa

from . import fixtures as fx

pytestmark = pytest.mark.e2e

RULES = """
[rules]
flexible_worker_subsidy = 'hrss.flexible_workers[缴费月数 >= 6] and not fund.depositors and age < 35'

[purposes]
flexible_worker_subsidy = "flexible-worker-deposit"
"""


def test_rule_decisions_equal_the_plain_computation(tmp_path):
    s = fx.build(tmp_path, registry_size=800, applicants=200,
                 grant={"kinds": ["membership", "predicate"], "predicate_columns": ["缴费月数"]})
    s.fed.add_node("fund", partners=[{"id": "hrss"}], datasets=[{"name": "depositors"}])
    rng = random.Random(11)
    depositors = set(rng.sample(s.applicants, 60))
    fx.write_csv(tmp_path / "depositors.csv", ["sfzh"], [[p] for p in sorted(depositors)])
    with open(s.registry_csv, newline="", encoding="gb18030") as f:
        months = {r["公民身份号码"]: int(r["缴费月数"]) for r in csv.DictReader(f)}
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
    with open(tmp_path / "decisions.csv", newline="", encoding="utf-8-sig") as f:
        decisions = list(csv.DictReader(f))
    assert len(decisions) == len(s.applicants)
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes['fund'].directory / 'node.db'}")
    with engine.connect() as conn:
        logged = set(conn.execute(sa.text("SELECT query_id FROM query_log")).scalars())
    engine.dispose()
    for d in decisions:
        p = d["身份证号"]
        expected = months.get(p, 0) >= 6 and p not in depositors and ages[p] < 35
        assert (d["decision"] == "eligible") == expected, p[:0] + d["line"]
        qids = set(filter(None, d["query_ids"].split(";")))
        assert qids <= logged and d["explanation"]
        if expected:  # every source was cited: the partner's answer and the local lookup
            assert len(qids) == 2
        elif months.get(p, 0) < 6:  # the partner's answer decided
            assert len(qids) == 1 and "hrss.flexible_workers" in d["explanation"]
    assert "eligible" in r.stdout
