"""Multi-agency eligibility rules for the fund centre, with provenance for appeals.

A rule file is TOML with one rule per key under ``[rules]``::

    [rules]
    flexible_worker_subsidy = 'hrss.flexible_workers[contribution_months >= 6] and not fund.depositors'
    graduate_housing = 'edu.graduates[graduation_year >= 2024] and age < 35'

A rule combines terms with ``and``/``or``/``not`` and parentheses (as in
:mod:`node.language.predicate`). A term is either

* a source, ``partner.dataset`` optionally followed by ``[predicate]``: "is the applicant
  in that dataset (among the rows satisfying the predicate)?". The predicate is in the
  :mod:`node.language.predicate` grammar and is evaluated by the dataset's owner. When ``partner``
  is the asking node's own id (``fund.depositors`` on the fund centre) the dataset is
  local, answered without leaving the node, and counts as a source all the same. A
  partner id with a hyphen is written in backquotes: ```hrss-bureau`.flexible_workers``.
* a local comparison over the applicant input file, ``age < 35``, evaluated here.

Running a rule: ``plan(rule)`` lists the distinct membership questions
(:class:`SourceQuery`). The runner asks each of them about *every* applicant whose
identifier is valid (asking only what short-circuiting needs would tell a partner the
outcome of other sources), collects one :class:`Answer` per question, then calls
``evaluate`` per applicant. Terms are evaluated left to right with short-circuiting, and
a :class:`Decision` records as provenance exactly the terms that decided it: for an
``and`` that is false, the first false operand; for an ``and`` that is true, every
operand; dually for ``or``; ``not`` passes its operand's provenance through. For
``a and not b`` with ``a`` false the provenance is ``[a]``.

No decision is made on unusable input: an applicant whose identifier does not validate,
or whose local column is missing or not a number where a number is compared (and the
comparison was needed), gets ``Decision(eligible=None, reason=...)``. Reasons never
contain identifiers or cell values.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal, Union

from adapters.identifiers import IdType, InvalidIdentifier, normalise
from adapters.reader import INEXACT_NUMBER_REASON
from node.core.errors import InvalidInput, ShuqiaoError
from node.language import predicate as pred
from node.language.predicate import And, Comparison, In, Not, Or, ParseError

__all__ = [
    "MAX_RULE_LENGTH", "RuleError", "SourceQuery", "Source", "Rule", "Answer", "Evidence",
    "Decision", "parse_rule", "load_rules", "plan", "evaluate", "explain", "refused",
]

MAX_RULE_LENGTH = 4000
# Mirror node.core.config's NODE_ID and DATASET_NAME patterns.
_PARTNER = re.compile(r"[a-z][a-z0-9_-]{1,62}")
_DATASET = re.compile(r"[a-z][a-z0-9_]{1,62}")
_RULE_NAME = re.compile(r"[a-z][a-z0-9_]{0,62}")


class RuleError(InvalidInput, ValueError):
    """A rule file or rule text is invalid. ``position`` is set for syntax errors."""

    def __init__(self, message: str, *, rule: str | None = None,
                 position: int | None = None) -> None:
        self.rule = rule
        self.position = position
        where = f"rule {rule!r}: " if rule else ""
        at = f" (at column {position})" if position is not None else ""
        super().__init__(f"{where}{message}{at}")
        self.message = message

    def __reduce__(self):
        return (_rule_error, (self.message, self.rule, self.position))


def _rule_error(message: str, rule: str | None, position: int | None) -> RuleError:
    return RuleError(message, rule=rule, position=position)


@dataclass(frozen=True, slots=True)
class SourceQuery:
    """One membership question: ``partner.dataset[predicate]``.

    ``predicate`` is the canonical predicate text (see ``node.language.predicate.to_canonical``)
    or None for plain membership; it is what both parties and the ledger record.
    """

    partner: str
    dataset: str
    predicate: str | None = None

    @property
    def text(self) -> str:
        head = f"{pred.format_column(self.partner)}.{pred.format_column(self.dataset)}"
        return head if self.predicate is None else f"{head}[{self.predicate}]"

    def is_local(self, node_id: str) -> bool:
        """True when the dataset belongs to the node running the rule."""
        return self.partner == node_id


@dataclass(frozen=True, slots=True)
class Source:
    """A source term in a rule's AST."""

    query: SourceQuery


RuleNode = Union[Source, Comparison, In, Not, And, Or]


@dataclass(frozen=True)
class Rule:
    """A parsed rule. ``canonical`` keeps the written order (it decides provenance)."""

    name: str
    text: str
    expr: RuleNode
    canonical: str
    local_columns: frozenset[str]
    _conditions: Mapping[object, pred.Condition] = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class Answer:
    """The outcome of one SourceQuery.

    Attributes:
        query_id: the ledgered query that produced it (local lookups get one too).
        membership: normalised applicant identifier → in the (filtered) dataset.
    """

    query_id: str
    membership: Mapping[str, bool]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One deciding term: a source's answer, or a local comparison (source None)."""

    term: str
    value: bool
    source: SourceQuery | None = None
    query_id: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    """eligible is None when no decision could be made; reason then says why."""

    rule: str
    eligible: bool | None
    provenance: tuple[Evidence, ...] = ()
    reason: str | None = None
    reason_zh: str | None = None


# --- parsing ---------------------------------------------------------------------------

class _RuleParser(pred.BooleanParser):
    max_length = MAX_RULE_LENGTH

    def __init__(self, text: str) -> None:
        super().__init__(text, rule_syntax=True)

    def term(self):
        tok = self.peek()
        if tok.kind == "ident" and self.peek(1).kind == ".":
            self.advance()
            self.advance()
            if not _PARTNER.fullmatch(tok.value):
                raise ParseError(f"{tok.value!r} is not a node id", tok.position)
            ds = self.expect("ident", f"a dataset name after '{tok.value}.'")
            if not _DATASET.fullmatch(ds.value):
                raise ParseError(f"{ds.value!r} is not a dataset name", ds.position)
            canonical = None
            if self.peek().kind == "bracket":
                bracket = self.advance()
                if not bracket.value.strip():
                    raise ParseError("empty predicate in '[]'", bracket.position)
                try:
                    canonical = pred.to_canonical(pred.parse(bracket.value))
                except ParseError as exc:
                    raise ParseError(f"in the predicate: {exc.message}",
                                     bracket.end + exc.position - 1) from None
            self.count()
            return Source(SourceQuery(tok.value, ds.value, canonical))
        return self.comparison()


def _render_source(node: object) -> str:
    if isinstance(node, Source):
        return node.query.text
    raise TypeError(f"not a rule node: {type(node).__name__}")


def _leaves(node: RuleNode):
    if isinstance(node, Not):
        yield from _leaves(node.operand)
    elif isinstance(node, (And, Or)):
        for child in node.operands:
            yield from _leaves(child)
    else:
        yield node


def parse_rule(name: str, text: str) -> Rule:
    """Parse one rule.

    Raises:
        RuleError: with ``position`` for syntax errors (predicate errors included).
    """
    if not isinstance(name, str) or not _RULE_NAME.fullmatch(name):
        raise RuleError("a rule name is lowercase letters, digits and '_', starting with a "
                        "letter", rule=str(name))
    try:
        expr = _RuleParser(text).parse()
    except ParseError as exc:
        raise RuleError(exc.message, rule=name, position=exc.position) from None
    leaves = list(_leaves(expr))
    if not any(isinstance(leaf, Source) for leaf in leaves):
        raise RuleError("a rule needs at least one source term (partner.dataset)", rule=name)
    local = [leaf for leaf in leaves if not isinstance(leaf, Source)]
    return Rule(name=name, text=text, expr=expr,
                canonical=pred.render(expr, _render_source),
                local_columns=frozenset(leaf.column for leaf in local),
                _conditions={leaf: pred.compile_condition(leaf) for leaf in local})


def load_rules(toml_text: str) -> dict[str, Rule]:
    """Read a rule file: a ``[rules]`` table of name = 'rule text', nothing else.

    Raises:
        RuleError: the file is not TOML, has other keys, or a rule is invalid.
    """
    try:
        doc = tomllib.loads(toml_text)
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"not valid TOML: {exc}") from None
    extra = sorted(set(doc) - {"rules"})
    if extra:
        raise RuleError(f"unknown top-level keys {extra}; only [rules] is allowed")
    table = doc.get("rules")
    if not isinstance(table, dict) or not table:
        raise RuleError("the file needs a non-empty [rules] table")
    rules = {}
    for name, text in table.items():
        if not isinstance(text, str):
            raise RuleError("the rule must be a string", rule=name)
        rules[name] = parse_rule(name, text)
    return rules


def plan(rule: Rule) -> list[SourceQuery]:
    """The distinct membership questions the rule needs, in order of first appearance."""
    seen: dict[SourceQuery, None] = {}
    for leaf in _leaves(rule.expr):
        if isinstance(leaf, Source):
            seen.setdefault(leaf.query)
    return list(seen)


# --- evaluation ------------------------------------------------------------------------

class _NoDecision(ShuqiaoError):
    def __init__(self, reason: str, reason_zh: str) -> None:
        self.reason, self.reason_zh = reason, reason_zh


def _evaluate(rule: Rule, node: RuleNode, answers: Mapping[SourceQuery, Answer],
              applicant: str, row: Mapping[str, str]) -> tuple[bool, tuple[Evidence, ...]]:
    if isinstance(node, Source):
        q = node.query
        answer = answers.get(q)
        if answer is None:
            raise KeyError(f"no answer for {q.text} (plan() lists every source a rule needs)")
        value = answer.membership.get(applicant)
        if not isinstance(value, bool):
            raise KeyError(f"the answer to {q.text} (query {answer.query_id}) does not cover "
                           "this applicant; ask every source about every valid applicant")
        return value, (Evidence(q.text, value, q, answer.query_id),)
    if isinstance(node, Not):
        value, evidence = _evaluate(rule, node.operand, answers, applicant, row)
        return not value, evidence
    if isinstance(node, (And, Or)):
        decisive = isinstance(node, Or)
        collected: list[Evidence] = []
        for child in node.operands:
            value, evidence = _evaluate(rule, child, answers, applicant, row)
            if value is decisive:
                return decisive, evidence
            collected.extend(evidence)
        return not decisive, tuple(collected)
    value = rule._conditions[node](row)
    if value is None:
        numeric = any(isinstance(v, Decimal) for v in (
            node.values if isinstance(node, In) else (node.value,)))
        raise _NoDecision(
            f"applicant column {node.column!r} is missing" + (" or not a number" if numeric
                                                             else ""),
            f"申请人数据列 {node.column!r} 缺失" + ("或不是数字" if numeric else ""))
    return value, (Evidence(pred.render(node), value),)


_REASONS_ZH = {
    "bad check digit": "校验码错误", "invalid birth date": "出生日期无效",
    "wrong length": "长度错误", "invalid character": "含有无效字符", "empty": "为空",
    "invalid region code": "地区码无效", "too long": "过长",
    "not a mainland China mobile number": "不是中国大陆手机号码",
    INEXACT_NUMBER_REASON: "表格把证件号码存成了数字，位数已丢失；请将该列设为文本格式后重新录入",
}


def refused(rule: Rule, reason: str) -> Decision:
    """No decision for an applicant whose identifier was refused (the reason never quotes it)."""
    return Decision(rule.name, None, reason=f"invalid identifier: {reason}",
                    reason_zh=f"证件号码无效：{_REASONS_ZH.get(reason, reason)}")


def evaluate(rule: Rule, answers: Mapping[SourceQuery, Answer],
             applicant_row: Mapping[str, str], *, id_column: str,
             id_type: IdType | str = IdType.CN_RESIDENT_ID,
             today: date | None = None) -> Decision:
    """Decide one applicant.

    Args:
        answers: one Answer per SourceQuery in ``plan(rule)``, keyed by normalised id.
        applicant_row: the applicant's input row (column → text).
        id_column, id_type: where the applicant's identifier is and how to normalise it.

    Raises:
        KeyError: an answer is missing, or does not cover a valid applicant (a wiring
            error in the runner, not a property of the applicant).
    """
    raw = applicant_row.get(id_column)
    if not isinstance(raw, str):
        return Decision(rule.name, None, reason=f"identifier column {id_column!r} is missing",
                        reason_zh=f"证件号码列 {id_column!r} 缺失")
    try:
        applicant = normalise(id_type, raw, today=today)
    except InvalidIdentifier as exc:
        return refused(rule, exc.reason)
    try:
        value, evidence = _evaluate(rule, rule.expr, answers, applicant, applicant_row)
    except _NoDecision as nd:
        return Decision(rule.name, None, reason=nd.reason, reason_zh=nd.reason_zh)
    return Decision(rule.name, value, tuple(dict.fromkeys(evidence)))  # a term may recur


# --- explanations ----------------------------------------------------------------------

def _fact(e: Evidence, lang: str) -> str:
    if e.source is None:
        if lang == "zh":
            return f"申请人数据 {e.term} {'成立' if e.value else '不成立'}"
        return f"applicant data: {e.term} {'holds' if e.value else 'does not hold'}"
    if lang == "zh":
        return f"{'在' if e.value else '不在'} {e.term} 中（查询 {e.query_id}）"
    return f"{'in' if e.value else 'not in'} {e.term} (query {e.query_id})"


def explain(decision: Decision, lang: Literal["en", "zh", "both"] = "both") -> str:
    """A plain-language account of a decision for an appeal.

    ``lang="both"`` gives the English line, then the Chinese line.
    """
    if lang == "both":
        return explain(decision, "en") + "\n" + explain(decision, "zh")
    if lang not in ("en", "zh"):
        raise ValueError("lang is 'en', 'zh' or 'both'")
    if decision.eligible is None:
        return (f"无法判定：{decision.reason_zh or decision.reason}" if lang == "zh"
                else f"no decision: {decision.reason}")
    facts = ("；" if lang == "zh" else "; ").join(_fact(e, lang) for e in decision.provenance)
    if lang == "zh":
        return f"{'符合条件' if decision.eligible else '不符合条件'}：{facts}"
    return f"{'eligible' if decision.eligible else 'not eligible'}: {facts}"
