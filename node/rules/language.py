"""Multi-agency eligibility rules for the fund centre, with provenance for appeals.

A rule file (read by node/rules/rulefile.py) names rules under ``[rules]``::

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
(:class:`SourceQuery`). What the asking node knows itself comes first: its own datasets
and the applicant file's columns. ``pending(rule, answers, row, applicant)`` says, per
applicant, which partner sources could still change the decision once those are known
(none, when the local terms decide alone), and the runner asks each partner about
exactly the applicants whose decision needs it: nobody already excluded here is sent to
a partner. Which of them were asked never depends on another *partner's* answer (that
would tell a partner the outcome of other sources); a partner learns how many passed
the local terms, as it learns the size of any query.

``evaluate`` then decides each applicant in three-valued (Kleene) logic over the terms
whose values are known: an ``and`` with a false operand is false, one whose operands
are all true is true, otherwise it is undecided; dually for ``or``; ``not`` flips. A
:class:`Decision` records as provenance exactly the terms that decided it: for an
``and`` that is false, its first false operand in written order; for an ``and`` that
is true, every operand; dually for ``or``; ``not`` passes its operand's provenance
through. For ``a and not b`` with ``a`` false the provenance is ``[a]``; whatever the
uncited terms were, the decision would be the same.

No decision is made on unusable input: an applicant whose identifier does not validate,
or whose decision needs a local column that is missing or not a number where a number
is compared, gets ``Decision(eligible=None, reason=...)``. Reasons never contain
identifiers or cell values.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Literal, Union

from adapters.identifiers import IdType, InvalidIdentifier, normalise
from adapters.reader import INEXACT_NUMBER_REASON
from node.core.errors import InvalidInput
from node.language import predicate as pred
from node.language.predicate import And, Comparison, In, Not, Or, ParseError

__all__ = [
    "MAX_RULE_LENGTH", "RuleError", "SourceQuery", "Source", "Rule", "Answer", "Evidence",
    "Decision", "parse_rule", "plan", "pending", "evaluate", "explain", "refused",
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


def plan(rule: Rule) -> list[SourceQuery]:
    """The distinct membership questions the rule needs, in order of first appearance."""
    seen: dict[SourceQuery, None] = {}
    for leaf in _leaves(rule.expr):
        if isinstance(leaf, Source):
            seen.setdefault(leaf.query)
    return list(seen)


# --- evaluation ------------------------------------------------------------------------

# A term's value: True, False, or None when unknown; the evidence that decided it; and
# the leaves that left it unknown (a source not answered for the applicant, or a local
# comparison whose column is missing or not a number).
_Value = tuple["bool | None", tuple[Evidence, ...], tuple[object, ...]]


def _kleene(rule: Rule, node: RuleNode, known: "_Known", row: Mapping[str, str]) -> _Value:
    if isinstance(node, Source):
        value = known(node.query)
        if value is None:
            return None, (), (node.query,)
        return value, (Evidence(node.query.text, value, node.query, known.query_ids.get(node.query)),), ()
    if isinstance(node, Not):
        value, evidence, unknown = _kleene(rule, node.operand, known, row)
        return (None if value is None else not value), evidence, unknown
    if isinstance(node, (And, Or)):
        decisive = isinstance(node, Or)  # the value that decides the whole: True for or
        values = [_kleene(rule, child, known, row) for child in node.operands]
        for value, evidence, _ in values:
            if value is decisive:
                return decisive, evidence, ()  # the first decisive operand, as written
        if all(value is not None for value, _, _ in values):
            return not decisive, tuple(e for _, evidence, _ in values for e in evidence), ()
        return None, (), tuple(u for value, _, unknown in values if value is None for u in unknown)
    value = rule._conditions[node](row)
    if value is None:
        return None, (), (node,)
    return value, (Evidence(pred.render(node), value),), ()


class _Known:
    """The answers' values for one applicant (None: not asked, or no answer)."""

    def __init__(self, answers: Mapping[SourceQuery, Answer], applicant: str) -> None:
        self.answers, self.applicant = answers, applicant
        self.query_ids = {q: a.query_id for q, a in answers.items()}

    def __call__(self, query: SourceQuery) -> bool | None:
        answer = self.answers.get(query)
        value = None if answer is None else answer.membership.get(self.applicant)
        return value if isinstance(value, bool) else None


def _missing(node) -> tuple[str, str]:
    """Why a local comparison has no value (en, zh), naming the column, never the cell."""
    numeric = any(isinstance(v, Decimal) for v in (
        node.values if isinstance(node, In) else (node.value,)))
    return (f"applicant column {node.column!r} is missing" + (" or not a number" if numeric else ""),
            f"申请人数据列 {node.column!r} 缺失" + ("或不是数字" if numeric else ""))


def pending(rule: Rule, answers: Mapping[SourceQuery, Answer], applicant_row: Mapping[str, str],
            applicant: str) -> frozenset[SourceQuery]:
    """The sources whose answer about `applicant` could still decide the rule, given the
    answers already held (the node's own datasets) and the applicant's row. Empty when
    the rule is decided without them, or cannot be decided by any of them."""
    value, _, unknown = _kleene(rule, rule.expr, _Known(answers, applicant), applicant_row)
    if value is not None:
        return frozenset()
    return frozenset(u for u in unknown if isinstance(u, SourceQuery))


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
        answers: per SourceQuery of ``plan(rule)``, membership keyed by normalised id; a
            source need not cover an applicant whose decision does not need it.
        applicant_row: the applicant's input row (column → text).
        id_column, id_type: where the applicant's identifier is and how to normalise it.

    Raises:
        KeyError: an answer is missing, or does not cover a valid applicant whose
            decision needs it (a wiring error in the runner, not a property of the
            applicant).
    """
    raw = applicant_row.get(id_column)
    if not isinstance(raw, str):
        return Decision(rule.name, None, reason=f"identifier column {id_column!r} is missing",
                        reason_zh=f"证件号码列 {id_column!r} 缺失")
    try:
        applicant = normalise(id_type, raw, today=today)
    except InvalidIdentifier as exc:
        return refused(rule, exc.reason)
    value, evidence, unknown = _kleene(rule, rule.expr, _Known(answers, applicant), applicant_row)
    if value is not None:
        return Decision(rule.name, value, tuple(dict.fromkeys(evidence)))  # a term may recur
    missing = [u for u in unknown if not isinstance(u, SourceQuery)]
    if missing:
        reason, reason_zh = _missing(missing[0])
        return Decision(rule.name, None, reason=reason, reason_zh=reason_zh)
    q = unknown[0]  # a source the runner should have asked about this applicant
    if q not in answers:
        raise KeyError(f"no answer for {q.text} (plan() lists every source a rule needs)")
    raise KeyError(f"the answer to {q.text} (query {answers[q].query_id}) does not cover this "
                   "applicant, whose decision needs it (see pending())")


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
