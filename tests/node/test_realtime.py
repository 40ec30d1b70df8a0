"""One applicant checked in real time takes the rule runner's path: same decisions, its
provenance in the ledger, what it keeps in memory, and refusals that never quote the
identifier (a local-only rule: no partner needed; partners are in tests/e2e/test_checks_e2e.py)."""
from __future__ import annotations

import random

import pytest

from adapters import IdType, open_csv, synthetic_resident_id
from node.core.config import load_config
from node.datasets.registration import register
from node.devtools.localnet import Federation
from node.devtools.synthetic import write_csv
from node.rules.language import RuleError
from node.rules.realtime import (InvalidApplicant, RulesNotConfigured, UnknownRule, check, query_rule,
                                 rule_purposes, service_rules)
from node.rules.runner import run_rule
from node.runtime.context import NodeContext

RULES = """
[rules]
young_depositor = 'fund.depositors and age < 35'
worker = 'hrss.flexible_workers[缴费月数 >= 6] and not fund.depositors'

[purposes]
worker = "flexible-worker-deposit"
"""


@pytest.fixture(scope="module")
def fund(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("realtime")
    rng = random.Random(8)
    people = [synthetic_resident_id(rng) for _ in range(6)]
    fed = Federation(tmp_path / "fed")
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    node = fed.add_node("fund", partners=[{"id": "hrss"}], datasets=[{"name": "depositors"}],
                        extra={"service": {"rules_file": str(tmp_path / "rules.toml")}})
    write_csv(tmp_path / "depositors.csv", ["sfzh"], [[p] for p in people[:3]])
    with NodeContext(load_config(node.config_path)) as ctx:
        with open_csv(tmp_path / "depositors.csv") as src:
            register(ctx, "depositors", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                     source_kind="csv", source_label="depositors")
        yield ctx, people, tmp_path


def test_a_check_decides_as_the_file_run_does(fund):
    ctx, people, tmp_path = fund
    rules = service_rules(ctx)
    rows = [(people[0], "30"), (people[1], "40"), (people[4], "30"), (people[2], None)]
    write_csv(tmp_path / "in.csv", ["身份证号", "age"], [[p, a or ""] for p, a in rows])
    with open_csv(tmp_path / "in.csv") as source:
        run = run_rule(ctx, rules, "young_depositor", source, id_column="身份证号", id_type=IdType.CN_RESIDENT_ID)
    by_file = [d[2] for d in run.decisions]
    singles = [check(ctx, rules, "young_depositor", p, {"age": a} if a else {}) for p, a in rows]
    assert [r.eligible for r in singles] == by_file == [True, False, False, None]
    first = singles[0]
    assert first.explanation.startswith("符合条件") and first.query_ids == [first.queries[0].query_id]
    assert first.queries[0].ledger_index == ctx.ledger.find_query(first.query_ids[0])[-1][0]
    assert first.queries[0].receipt is None and first.queries[0].cited
    assert singles[3].explanation == "无法判定：申请人数据列 'age' 缺失或不是数字"
    en = check(ctx, rules, "young_depositor", f" {people[0].lower()} ", {"age": "30"}, lang="en")
    assert en.eligible is True and en.explanation.startswith("eligible: in fund.depositors")
    assert len(ctx.caches.local_members) == 1  # the version's members, read once
    assert service_rules(ctx) is rules  # parsed once while the file is unchanged


def test_refusals_never_quote_the_identifier(fund):
    ctx, people, tmp_path = fund
    rules = service_rules(ctx)
    wrong = people[0][:-1] + ("0" if people[0][-1] != "0" else "1")
    with pytest.raises(InvalidApplicant) as exc:
        check(ctx, rules, "young_depositor", wrong, {"age": "30"})
    assert wrong not in str(exc.value) and exc.value.reason == "bad check digit"
    with pytest.raises(UnknownRule, match="no rule 'nope'"):
        rule_purposes(ctx, rules, "nope")
    assert rule_purposes(ctx, rules, "worker") == {"hrss": "flexible-worker-deposit"}
    assert rule_purposes(ctx, rules, "young_depositor") == {}  # local sources state no purpose


def test_a_single_query_is_a_one_term_rule(fund):
    one = query_rule("hrss", "flexible_workers", "flexible-worker-deposit", predicate="缴费月数>=6")
    (rule,) = one.rules.values()
    assert rule.text == "hrss.flexible_workers[缴费月数 >= 6]"
    assert one.purpose(rule.name, "hrss") == "flexible-worker-deposit"
    with pytest.raises(RuleError, match="predicate"):
        query_rule("hrss", "flexible_workers", "p", predicate="缴费月数 >=")


def test_the_rule_file_is_read_again_when_it_changes(fund):
    ctx, _, tmp_path = fund
    first = service_rules(ctx)
    (tmp_path / "rules.toml").write_text(RULES + "\n# edited\n", encoding="utf-8")
    assert service_rules(ctx) is not first
    (tmp_path / "rules.toml").write_text(RULES + "\n[surprise]\n", encoding="utf-8")
    with pytest.raises(RulesNotConfigured, match="(?s)not valid.*surprise: unknown table"):
        service_rules(ctx)
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    configured = ctx.config
    ctx.config = configured.model_copy(update={"service": configured.service.model_copy(
        update={"rules_file": None})})
    try:
        with pytest.raises(RulesNotConfigured, match="rules_file"):
            service_rules(ctx)
    finally:
        ctx.config = configured
