"""node.rules.language: rule files, plans, decisions with provenance, and their explanations."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.identifiers import synthetic_resident_id
from node.rules import language as rules
from node.rules.language import Answer, Decision, Evidence, RuleError, SourceQuery
from node.rules.rulefile import load_rules, parse_rule_file

RULE_FILE = """
[rules]
flexible_worker_subsidy = 'hrss.flexible_workers[contribution_months >= 6] and not fund.depositors'
graduate_housing = 'edu.graduates[graduation_year >= 2024] and age < 35'
"""

RNG = random.Random(20240601)
ALICE, BOB, CAROL = (synthetic_resident_id(RNG) for _ in range(3))
HRSS = SourceQuery("hrss", "flexible_workers", "contribution_months >= 6")
DEPOSITORS = SourceQuery("fund", "depositors")
GRADUATES = SourceQuery("edu", "graduates", "graduation_year >= 2024")


@pytest.fixture(scope="module")
def rule_set():
    return load_rules(RULE_FILE)


def decide(rule, answers, row):
    return rules.evaluate(rule, answers, row, id_column="身份证号")


# --- parsing and planning --------------------------------------------------------------

def test_rule_file_parses(rule_set):
    subsidy, housing = rule_set["flexible_worker_subsidy"], rule_set["graduate_housing"]
    assert subsidy.canonical == ("hrss.flexible_workers[contribution_months >= 6] and "
                                 "not fund.depositors")
    assert housing.canonical == "edu.graduates[graduation_year >= 2024] and age < 35"
    assert subsidy.local_columns == frozenset() and housing.local_columns == {"age"}


def test_plan_lists_distinct_sources_in_order(rule_set):
    assert rules.plan(rule_set["flexible_worker_subsidy"]) == [HRSS, DEPOSITORS]
    assert rules.plan(rule_set["graduate_housing"]) == [GRADUATES]
    rule = rules.parse_rule("r", "hrss.flexible_workers[contribution_months>=6.0] or "
                                 "(edu.graduates and hrss.flexible_workers[ contribution_"
                                 "months >= 6 ]) or not edu.graduates")
    assert rules.plan(rule) == [HRSS, SourceQuery("edu", "graduates")]


def test_local_sources_are_sources(rule_set):
    local = [q for q in rules.plan(rule_set["flexible_worker_subsidy"]) if q.is_local("fund")]
    assert local == [DEPOSITORS]


def test_predicates_are_canonical_and_positions_point_into_the_rule():
    rule = rules.parse_rule("r", 'edu.graduates[degree in ("硕士","本科") and graduation_year>=2024]')
    assert rules.plan(rule)[0].predicate == ('degree in ("本科", "硕士") and '
                                             'graduation_year >= 2024')
    text = "hrss.flexible_workers[months >= 6 and status = 1]"
    with pytest.raises(RuleError) as err:
        rules.parse_rule("r", text)
    assert text[err.value.position - 1] == "=" and err.value.position == text.index("= 1") + 1
    assert "in the predicate" in str(err.value) and "rule 'r'" in str(err.value)


@pytest.mark.parametrize("text, fragment", [
    ("age < 35", "at least one source"),
    ("hrss.flexible_workers[]", "empty predicate"),
    ("hrss.flexible_workers[months >= 6", "missing ']'"),
    ("hrss.flexible_workers[a[1] == 2]", "'[' inside a predicate"),
    ("hrss.", "dataset name"),
    ("HRSS.flexible_workers", "not a node id"),
    ("hrss.Flexible", "not a dataset name"),
    ("人社.flexible_workers", "not a node id"),
    ("hrss.flexible_workers and", "column name"),
    ("hrss.flexible_workers and age", "comparison operator"),
    ("hrss.flexible_workers; __import__('os')", "unexpected character ';'"),
    ("hrss.flexible_workers[status == \"]\"] or", "column name"),
    ("(" * 17 + "hrss.xx" + ")" * 17, "deeper than 16"),
    ("hrss.xx and " * 64 + "hrss.yy", "nodes"),
    ("x" * (rules.MAX_RULE_LENGTH + 1), "longer than"),
])
def test_rule_syntax_errors(text, fragment):
    with pytest.raises(RuleError) as err:
        rules.parse_rule("r", text)
    assert fragment in str(err.value)


def test_brackets_skip_strings_and_backquotes():
    rule = rules.parse_rule("r", 'edu.graduates[`a]b` == "x]y"] and `hrss-city`.workers')
    assert rules.plan(rule) == [SourceQuery("edu", "graduates", '`a]b` == "x]y"'),
                                SourceQuery("hrss-city", "workers")]
    assert rule.canonical == 'edu.graduates[`a]b` == "x]y"] and `hrss-city`.workers'
    assert rules.parse_rule("r", rule.canonical).expr == rule.expr


@pytest.mark.parametrize("text, fragment", [
    ("rules = 1", "rules: the file needs a non-empty [rules] table"),
    ("[rules]\n", "rules: the file needs a non-empty [rules] table"),
    ("x = 1", "rules: the file needs a non-empty [rules] table"),
    ("[rules]\nx = 1\n", "rules.x: the rule must be a string"),
    ("[rules]\nBad-Name = 'hrss.x'\n", "rules.Bad-Name: a rule name is lowercase"),
    ("[rules]\nx = 'hrss.x'\n[other]\ny = 1\n", "other: unknown table or key"),
    ("[rules\n", "not valid TOML"),
    ("[rules]\nx = 'hrss.x and'\n", "rule 'x'"),
    ("[rules]\nx = 'hrss.xx'\n[purposes]\ny = 'p-1'\n", "names 'y', which is not in [rules]"),
    ("[rules]\nx = 'hrss.x'\n[purposes]\nx = 'Not A Code'\n", "purposes.x: a purpose code, or a table"),
    ("[rules]\nx = 'hrss.x'\n[purposes]\nx = { hrss = 7 }\n", "purposes.x: a purpose code, or a table"),
    ("[rules]\nx = 'hrss.xx'\n[purposes]\nx = { hrs = 'p-1' }\n", "gives 'hrs' a purpose, but the rule never asks"),
])
def test_rule_file_errors(text, fragment):
    with pytest.raises(RuleError) as err:
        load_rules(text)
    assert fragment in str(err.value)


def test_purposes_one_for_all_or_one_per_partner():
    doc = {"rules": {"old": "hrss.xx and edu.yy", "cross": "edu.graduates and hrss.flexible_workers"},
           "purposes": {"old": "flexible-worker-deposit",
                        "cross": {"edu": "graduate-housing-support", "hrss": "flexible-worker-deposit"}}}
    rule_file = parse_rule_file(doc)
    assert rule_file.purpose("old", "hrss") == rule_file.purpose("old", "edu") == "flexible-worker-deposit"
    assert rule_file.purpose("cross", "edu") == "graduate-housing-support"
    assert rule_file.purpose("cross", "hrss") == "flexible-worker-deposit"
    assert parse_rule_file({"rules": {"r": "hrss.xx"}}).purpose("r", "hrss") is None


# --- evaluation and provenance ---------------------------------------------------------

def answers(hrss: dict, depositors: dict) -> dict:
    return {HRSS: Answer("q-hrss-1", hrss), DEPOSITORS: Answer("q-fund-7", depositors)}


@pytest.mark.parametrize("worker, depositor, eligible, provenance", [
    (True, False, True, [(HRSS, "q-hrss-1", True), (DEPOSITORS, "q-fund-7", False)]),
    (True, True, False, [(DEPOSITORS, "q-fund-7", True)]),
    (False, False, False, [(HRSS, "q-hrss-1", False)]),  # short circuit: b never consulted
    (False, True, False, [(HRSS, "q-hrss-1", False)]),
])
def test_decisions_record_exactly_the_deciding_terms(rule_set, worker, depositor, eligible,
                                                     provenance):
    decision = decide(rule_set["flexible_worker_subsidy"],
                      answers({ALICE: worker}, {ALICE: depositor}), {"身份证号": ALICE})
    assert decision.eligible is eligible and decision.reason is None
    assert [(e.source, e.query_id, e.value) for e in decision.provenance] == provenance


def test_or_rules_cite_the_first_true_term_or_all_false_ones():
    rule = rules.parse_rule("r", "hrss.flexible_workers[contribution_months >= 6] or "
                                 "fund.depositors")
    yes = decide(rule, answers({ALICE: False}, {ALICE: True}), {"身份证号": ALICE})
    assert yes.eligible and [e.source for e in yes.provenance] == [DEPOSITORS]
    first = decide(rule, answers({ALICE: True}, {ALICE: True}), {"身份证号": ALICE})
    assert [e.source for e in first.provenance] == [HRSS]
    no = decide(rule, answers({ALICE: False}, {ALICE: False}), {"身份证号": ALICE})
    assert not no.eligible and [e.source for e in no.provenance] == [HRSS, DEPOSITORS]


def test_local_comparisons(rule_set):
    housing = rule_set["graduate_housing"]
    grad = {GRADUATES: Answer("q-edu-3", {ALICE: True, BOB: False})}
    young = decide(housing, grad, {"身份证号": ALICE, "age": "28"})
    assert young.eligible is True
    assert young.provenance[1] == Evidence("age < 35", True)
    old = decide(housing, grad, {"身份证号": ALICE, "age": " 41 "})
    assert old.eligible is False and old.provenance == (Evidence("age < 35", False),)
    # the local column is needed only where evaluation reaches it
    not_grad = decide(housing, grad, {"身份证号": BOB, "age": "unknown"})
    assert not_grad.eligible is False and [e.query_id for e in not_grad.provenance] == [
        "q-edu-3"]
    for row in ({"身份证号": ALICE, "age": "二十八"}, {"身份证号": ALICE}):
        undecided = decide(housing, grad, row)
        assert undecided.eligible is None and undecided.provenance == ()
        assert undecided.reason == "applicant column 'age' is missing or not a number"


def test_string_local_comparison_missing_column():
    rule = rules.parse_rule("r", 'edu.graduates and 户籍 == "常州"')
    grad = {SourceQuery("edu", "graduates"): Answer("q", {ALICE: True})}
    assert decide(rule, grad, {"身份证号": ALICE, "户籍": "常州"}).eligible is True
    assert decide(rule, grad, {"身份证号": ALICE}).reason == "applicant column '户籍' is missing"


def test_invalid_identifiers_get_no_decision(rule_set):
    subsidy = rule_set["flexible_worker_subsidy"]
    bad_check = ALICE[:-1] + ("0" if ALICE[-1] != "0" else "1")
    for raw, reason in [(bad_check, "invalid identifier: bad check digit"),
                        ("12345", "invalid identifier: wrong length"),
                        ("", "invalid identifier: empty")]:
        decision = decide(subsidy, answers({}, {}), {"身份证号": raw})
        assert decision == Decision("flexible_worker_subsidy", None, (), reason,
                                    decision.reason_zh)
        assert raw not in decision.reason or not raw
    missing = decide(subsidy, answers({}, {}), {"姓名": "张三"})
    assert missing.eligible is None and "identifier column '身份证号' is missing" in missing.reason


def test_identifiers_are_normalised_before_lookup(rule_set):
    raw = ALICE.translate(str.maketrans("0123456789X", "０１２３４５６７８９x"))
    decision = decide(rule_set["flexible_worker_subsidy"],
                      answers({ALICE: True}, {ALICE: False}), {"身份证号": f" {raw} "})
    assert decision.eligible is True


def test_wiring_errors_raise_without_naming_the_applicant(rule_set):
    subsidy = rule_set["flexible_worker_subsidy"]
    with pytest.raises(KeyError) as err:
        decide(subsidy, {HRSS: Answer("q1", {ALICE: True})}, {"身份证号": ALICE})
    assert "fund.depositors" in str(err.value)
    with pytest.raises(KeyError) as err:
        decide(subsidy, answers({BOB: True}, {BOB: False}), {"身份证号": ALICE})
    assert ALICE not in str(err.value) and "q-hrss-1" in str(err.value)


def test_a_term_used_twice_is_cited_once():
    rule = rules.parse_rule("r", "fund.depositors and (edu.graduates or fund.depositors)")
    decision = decide(rule, {DEPOSITORS: Answer("q1", {ALICE: True}),
                             SourceQuery("edu", "graduates"): Answer("q2", {ALICE: False})},
                      {"身份证号": ALICE})
    assert decision.eligible and [e.query_id for e in decision.provenance] == ["q1"]


# --- explanations ----------------------------------------------------------------------

def test_explanations(rule_set):
    subsidy = rule_set["flexible_worker_subsidy"]
    no = decide(subsidy, answers({ALICE: False}, {ALICE: False}), {"身份证号": ALICE})
    assert rules.explain(no, "en") == ("not eligible: not in hrss.flexible_workers"
                                       "[contribution_months >= 6] (query q-hrss-1)")
    assert rules.explain(no, "zh") == ("不符合条件：不在 hrss.flexible_workers"
                                       "[contribution_months >= 6] 中（查询 q-hrss-1）")
    yes = decide(subsidy, answers({ALICE: True}, {ALICE: False}), {"身份证号": ALICE})
    assert rules.explain(yes, "en") == (
        "eligible: in hrss.flexible_workers[contribution_months >= 6] (query q-hrss-1); "
        "not in fund.depositors (query q-fund-7)")
    assert rules.explain(yes) == rules.explain(yes, "en") + "\n" + rules.explain(yes, "zh")
    housing = rule_set["graduate_housing"]
    old = decide(housing, {GRADUATES: Answer("q-edu-3", {ALICE: True})},
                 {"身份证号": ALICE, "age": "41"})
    assert rules.explain(old, "en") == "not eligible: applicant data: age < 35 does not hold"
    assert rules.explain(old, "zh") == "不符合条件：申请人数据 age < 35 不成立"
    bad = decide(subsidy, {}, {"身份证号": "12345"})
    assert rules.explain(bad, "en") == "no decision: invalid identifier: wrong length"
    assert rules.explain(bad, "zh") == "无法判定：证件号码无效：长度错误"
    with pytest.raises(ValueError):
        rules.explain(bad, "fr")


# --- property: provenance alone decides the outcome ------------------------------------

SOURCES = [SourceQuery(f"p{i}", "rows") for i in range(5)]
TREES = st.recursive(
    st.sampled_from([q.text for q in SOURCES]),
    lambda kids: st.one_of(kids.map(lambda t: ("not", t)),
                           st.tuples(st.sampled_from(["and", "or"]), kids, kids)),
    max_leaves=6)


def text_of(tree) -> str:
    if isinstance(tree, str):
        return tree
    if tree[0] == "not":
        return f"not ({text_of(tree[1])})"
    return f"({text_of(tree[1])}) {tree[0]} ({text_of(tree[2])})"


def naive(tree, values: dict[str, bool]) -> bool:
    if isinstance(tree, str):
        return values[tree]
    if tree[0] == "not":
        return not naive(tree[1], values)
    left, right = naive(tree[1], values), naive(tree[2], values)
    return left and right if tree[0] == "and" else left or right


@given(TREES, st.lists(st.booleans(), min_size=5, max_size=5))
@settings(max_examples=300, deadline=None)
def test_provenance_is_sufficient_and_consistent(tree, bits):
    rule = rules.parse_rule("r", text_of(tree))
    values = {q.text: b for q, b in zip(SOURCES, bits)}
    given_answers = {q: Answer(f"id-{q.partner}", {ALICE: values[q.text]}) for q in SOURCES}
    decision = decide(rule, given_answers, {"身份证号": ALICE})
    assert decision.eligible is naive(tree, values)
    cited = {e.term for e in decision.provenance}
    assert cited <= {q.text for q in rules.plan(rule)}
    for e in decision.provenance:
        assert e.value is values[e.term] and e.query_id == f"id-{e.source.partner}"
    # whatever the uncited sources had answered, the outcome would be the same
    free = [q.text for q in SOURCES if q.text not in cited]
    for flips in itertools.product([False, True], repeat=len(free)):
        assert naive(tree, {**values, **dict(zip(free, flips))}) is decision.eligible


def test_rule_errors_pickle():
    import pickle

    err = pickle.loads(pickle.dumps(RuleError("bad", rule="r", position=4)))
    assert (err.rule, err.position, str(err)) == ("r", 4, "rule 'r': bad (at column 4)")


# --- local terms first: who must a partner be asked about ------------------------------

def test_pending_lists_only_the_partner_sources_that_could_still_decide(rule_set):
    rule = rules.parse_rule("r", "hrss.flexible_workers[contribution_months >= 6] and "
                                 "not fund.depositors and age < 35")
    local = {DEPOSITORS: Answer("q-fund-7", {ALICE: True, BOB: False, CAROL: False})}
    assert rules.pending(rule, local, {"age": "30"}, ALICE) == frozenset()   # a depositor
    assert rules.pending(rule, local, {"age": "40"}, BOB) == frozenset()     # too old
    assert rules.pending(rule, local, {"age": "30"}, BOB) == {HRSS}
    assert rules.pending(rule, local, {}, CAROL) == {HRSS}  # hrss could still say no
    # decided locally: no partner answer needed, and the provenance is local
    old = decide(rule, local, {"身份证号": BOB, "age": "40"})
    assert old.eligible is False and old.provenance == (Evidence("age < 35", False),)
    depositor = decide(rule, local, {"身份证号": ALICE, "age": "30"})
    assert depositor.eligible is False and [e.query_id for e in depositor.provenance] == ["q-fund-7"]


def test_pending_asks_each_partner_only_where_its_branch_is_live():
    rule = rules.parse_rule("r", "(edu.graduates and age < 30) or (hrss.flexible_workers and age >= 30)")
    edu, hrss = SourceQuery("edu", "graduates"), SourceQuery("hrss", "flexible_workers")
    assert rules.pending(rule, {}, {"age": "25"}, ALICE) == {edu}
    assert rules.pending(rule, {}, {"age": "45"}, ALICE) == {hrss}
    assert rules.pending(rule, {}, {"age": "?"}, ALICE) == {edu, hrss}
    young = decide(rule, {edu: Answer("q-e", {ALICE: True})}, {"身份证号": ALICE, "age": "25"})
    assert young.eligible and [e.query_id for e in young.provenance if e.query_id] == ["q-e"]


LOCAL = SOURCES[:2]  # p0, p1 play this node's own datasets; p2..p4 partners
TERMS = [q.text for q in SOURCES] + ["age < 35"]
MIXED = st.recursive(
    st.sampled_from(TERMS),
    lambda kids: st.one_of(kids.map(lambda t: ("not", t)),
                           st.tuples(st.sampled_from(["and", "or"]), kids, kids)),
    max_leaves=7)


@given(MIXED, st.lists(st.booleans(), min_size=5, max_size=5), st.integers(20, 50))
@settings(max_examples=300, deadline=None)
def test_asking_only_the_pending_sources_decides_as_asking_everyone(tree, bits, age):
    text = text_of(tree)
    if not any(q.text in text for q in SOURCES):
        text = f"({text}) and p4.rows"
    rule = rules.parse_rule("r", text)
    values = {q.text: b for q, b in zip(SOURCES, bits)}
    row = {"身份证号": ALICE, "age": str(age)}
    everyone = {q: Answer(f"id-{q.partner}", {ALICE: values[q.text]}) for q in SOURCES}
    local = {q: everyone[q] for q in LOCAL}
    needed = rules.pending(rule, local, row, ALICE)
    assert not needed & set(LOCAL)
    asked = {**local, **{q: everyone[q] for q in needed}}
    full, partial = decide(rule, everyone, row), decide(rule, asked, row)
    assert partial.eligible is full.eligible
    assert all(e.source is None or e.source in asked for e in partial.provenance)


def test_the_shipped_rules_state_purposes_the_shipped_agencies_grant():
    from pathlib import Path

    from node.core.config import load_config
    from node.rules.rulefile import load_rule_file
    configs = Path(__file__).resolve().parents[2] / "configs"
    rule_file = load_rule_file(configs / "rules.toml")
    partners = set()
    for name, rule in rule_file.rules.items():
        for q in rules.plan(rule):
            if q.is_local("fund"):  # the fund centre's own dataset, looked up locally
                assert load_config(configs / "fund.toml").dataset(q.dataset) is not None
                continue
            agency = load_config(configs / f"{q.partner}.toml")
            (grant,) = [g for g in agency.dataset(q.dataset).grants if g.partner == "fund"]
            assert rule_file.purpose(name, q.partner) in grant.purpose_codes, (name, q.partner)
            assert ("predicate" if q.predicate else "membership") in {k.value for k in grant.kinds}
            partners.add(q.partner)
    assert partners == {"hrss", "edu"}  # a cross-agency rule among them
