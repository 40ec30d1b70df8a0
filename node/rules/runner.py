"""`shuqiao rule run`: multi-agency eligibility rules over an applicant list.

A rule file (node/rules/rulefile.py) holds `[rules]` (name = 'rule text', see
node/rules/language.py) and `[purposes]` (the purpose code stated to each partner).
Running a rule starts with what this node knows itself: its own datasets (looked up
about every valid applicant, logged like queries) and the applicant file's columns.
Then each partner source is asked once, about exactly the applicants whose decision
still depends on it (`language.pending`): nobody the local terms already decided is
sent to a partner, and which applicants are asked never depends on another partner's
answer. Each applicant is decided with the provenance an appeal needs: the query ids
that decided. A file (`run_rule`) and one applicant checked in real time
(node/rules/realtime.py) take the same path, `decide`.
"""
from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from adapters import Applicant, IdType, encode, read_applicants

from node.core.progress import no_progress
from node.asker import membership as asker
from node.language import predicate as pred
from node.runtime.context import NodeContext
from node.datasets.registration import current_version, iter_rows
from node.policy.querylog import QueryRecord
from node.rules.language import Answer, RuleError, SourceQuery, evaluate, explain, pending, plan, refused
from node.rules.rulefile import RuleFile


def _local_answer(ctx: NodeContext, q: SourceQuery, ids: list[str]) -> Answer:
    """A source on this node: its own current dataset version, logged like a query."""
    record = QueryRecord(query_id=str(uuid.uuid4()), role="local", asker=ctx.config.node.id,
                         answerer=ctx.config.node.id, kind="predicate" if q.predicate else "membership",
                         dataset=q.dataset, elements=len(ids), predicate=q.predicate or "",
                         started_at=ctx.clock.now())
    with ctx.engine.connect() as conn:
        version = current_version(conn, q.dataset)
    if version is None:
        raise RuleError(f"local dataset {q.dataset!r} has no registered version")
    members = ctx.caches.local_members.get_or_build(
        (version.id, q.predicate or ""), lambda: _members(ctx, version.id, q.predicate))
    record.version = version.version
    answer = {x: x in members for x in ids}
    record.outcome, record.matched = "answered", sum(answer.values())
    record.write(ctx)
    return Answer(record.query_id, answer)


def _members(ctx: NodeContext, version_id: int, predicate: str | None) -> frozenset[str]:
    """The identifiers of a local version's rows (satisfying `predicate`): read once per
    version and predicate, then kept in the context (a real-time check asks about one
    applicant at a time)."""
    keep = pred.compile_predicate(pred.parse(predicate)) if predicate else (lambda a: True)
    with ctx.engine.connect() as conn:
        return frozenset(subject for subject, attrs in iter_rows(conn, version_id, ctx.kek) if keep(attrs))


def stated_purposes(rule_file: RuleFile, name: str, node_id: str) -> dict[str, str]:
    """The purpose the rule states to each partner it asks (not to this node's own
    datasets); all checked before anyone is asked.

    Raises:
        RuleError: no such rule, or a partner the rule asks has no purpose in the file.
    """
    rule = rule_of(rule_file, name)
    return _purposes(rule_file, name, [q for q in plan(rule) if not q.is_local(node_id)])


def rule_of(rule_file: RuleFile, name: str):
    if name not in rule_file.rules:
        raise RuleError(f"no rule {name!r} in the rule file (rules: {', '.join(rule_file.rules)})")
    return rule_file.rules[name]


def _purposes(rule_file: RuleFile, name: str, sources: list[SourceQuery]) -> dict[str, str]:
    purposes = {}
    for q in sources:
        purpose = rule_file.purpose(name, q.partner)
        if not purpose:
            raise RuleError(f"rule {name!r} asks {q.partner}; give the purpose it states there in "
                            f'[purposes]: {name} = "<code>" (for every partner) or '
                            f'{name} = {{ {q.partner} = "<code>" }}')
        purposes[q.partner] = purpose
    return purposes


def _who_to_ask(rule, local: dict[SourceQuery, Answer], applicants) -> dict[SourceQuery, list[str]]:
    """Per partner source, the applicants (in file order, once each) whose decision needs it."""
    needed: dict[SourceQuery, dict[str, None]] = {q: {} for q in plan(rule) if q not in local}
    for a in applicants:
        for q in pending(rule, local, a.values, a.normalised_id):
            needed[q].setdefault(a.normalised_id)
    return {q: list(ids) for q, ids in needed.items()}


@dataclass
class RuleRun:
    """A rule over an input list: the counts, the queries that decided it, and each row's
    decision (line, values, eligible: True / False / None undetermined, explanation,
    query ids) in file order, for the result file."""
    rule: str
    text: str
    rows: int
    asked: int
    queries: dict[str, str]           # source query text -> query id
    asked_per_source: dict[str, int]  # partner source text -> applicants asked (0: not asked)
    decisions: list[tuple[int, dict[str, str], bool | None, str, list[str]]]
    columns: list[str]
    rejected: list[tuple[int, dict[str, str], str]] = field(default_factory=list)  # line, values, reason
    receipts: dict[str, object] = field(default_factory=dict)  # query id -> partner's verified receipt

    @property
    def counts(self) -> dict[str, int]:
        words = {True: "eligible", False: "not_eligible", None: "undetermined"}
        counts = dict.fromkeys(words.values(), 0)
        for d in self.decisions:
            counts[words[d[2]]] += 1
        return counts


def _decide(rule, answers, rows, *, id_column: str, id_type, lang: str) -> list:
    decisions = []
    for row in rows:
        d = (refused(rule, row.reason) if row.reason else
             evaluate(rule, answers, row.values, id_column=id_column, id_type=id_type))
        qids = list(dict.fromkeys(e.query_id for e in d.provenance if e.query_id))
        decisions.append((row.line, row.values, d.eligible, explain(d, lang), qids))
    return decisions


def run_rule(ctx: NodeContext, rule_file: RuleFile, name: str, source, *, id_column: str,
             id_type: IdType, progress=no_progress) -> RuleRun:
    """Every row of `source` decided by rule `name` (explanations in English, then Chinese)."""
    rule = rule_of(rule_file, name)
    stated_purposes(rule_file, name, ctx.config.node.id)  # a missing purpose fails before reading
    rows = []
    for a in read_applicants(source, id_column, id_type, columns=sorted(rule.local_columns)):
        progress("reading", source.progress_position(), source.progress_total)
        rows.append(a)
    return decide(ctx, rule_file, name, rows, list(source.columns), id_column=id_column,
                  id_type=id_type, progress=progress)


def decide(ctx: NodeContext, rule_file: RuleFile, name: str, rows: Sequence[Applicant],
           columns: list[str], *, id_column: str, id_type: IdType, lang: str = "both",
           progress=no_progress, listing_max_age: float = 0.0) -> RuleRun:
    """Decide `rows` (read applicants: a file's, or the one of a real-time check) by rule
    `name`: local sources first, then each partner about the applicants still pending.
    `listing_max_age`: see node/asker/membership.py."""
    rule, node_id = rule_of(rule_file, name), ctx.config.node.id
    remote = [q for q in plan(rule) if not q.is_local(node_id)]
    purposes = _purposes(rule_file, name, remote)
    valid = [a for a in rows if not a.reason]
    ids = list(dict.fromkeys(a.normalised_id for a in valid))
    answers = {q: _local_answer(ctx, q, ids) for q in plan(rule) if q.is_local(node_id)}
    asked = _who_to_ask(rule, answers, valid)
    receipts = {}
    for q in remote:
        if not asked[q]:
            continue  # every applicant was decided without this partner: it is not asked at all
        result = asker.membership(ctx, q.partner, q.dataset, purposes[q.partner],
                                  [encode(id_type, x) for x in asked[q]], progress,
                                  kind="predicate" if q.predicate else "membership",
                                  predicate=q.predicate, listing_max_age=listing_max_age)
        answers[q] = Answer(result.query_id, dict(zip(asked[q], map(bool, result.matched))))
        receipts[result.query_id] = result.receipt
    decisions = _decide(rule, answers, rows, id_column=id_column, id_type=id_type, lang=lang)
    return RuleRun(name, rule.text, len(rows), len(ids),
                   {q.text: a.query_id for q, a in answers.items()},
                   {q.text: len(asked[q]) for q in remote}, decisions, columns,
                   [(a.line, a.values, a.reason) for a in rows if a.reason], receipts)
