"""What a batch job runs its list against: a named rule, or one query to one partner.

A rule comes from the node's rule file (`[service] rules_file`, node/rules/rulefile.py)
and runs with node/rules/runner.py; a partner query runs with node/jobs/files.py. Each
target is checked before its job is queued (:func:`check_target`): the caller's scope
(the rules it may run, the purposes it may state), then that the target exists here.
:func:`run_target` runs it and saves its tables (node/jobs/saved.py).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import ClassVar

from adapters import IdType

from node.core.errors import ConfigError, InvalidInput, NotFound, NotPermitted
from node.core.progress import Progress
from node.jobs.files import SELECTIONS, ask_membership
from node.jobs.inputs import ListSpec
from node.jobs.results import decisions_table, rejects_table, rule_facts, Rejected
from node.jobs.saved import Bilingual, KeyWords, save_table
from node.rules.realtime import rule_purposes, service_rules
from node.rules.rulefile import RuleFile
from node.runtime.context import NodeContext

QUERY_KINDS = ("membership", "labeled", "predicate", "bulk")


@dataclass(frozen=True)
class RuleTarget:
    """A rule of the node's rule file, by name."""
    rule: str
    kind: ClassVar[str] = "rule"

    def params(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class QueryTarget:
    """One query to one partner: which rows are in its dataset (`query_kind` membership,
    labeled, predicate with `predicate`, or bulk); `select` keeps all rows, or only those
    in (intersection) or not in (difference) the dataset."""
    partner: str
    dataset: str
    purpose: str
    query_kind: str = "membership"
    predicate: str | None = None
    select: str = "all"
    kind: ClassVar[str] = "query"

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}


def target_from_params(kind: str, params: dict) -> RuleTarget | QueryTarget:
    return RuleTarget(**params) if kind == RuleTarget.kind else QueryTarget(**params)


class UnknownPartner(NotFound):
    """The job names a partner this node's config does not list."""


def rule_file(ctx: NodeContext) -> RuleFile:
    """The node's rule file (`[service] rules_file`), as real-time checks read it: an
    edited file applies to the next job.

    Raises:
        RulesNotConfigured: no rule file, or it cannot be read or is invalid (the node's
            to fix, not the caller's).
    """
    return service_rules(ctx)


def check_target(ctx: NodeContext, target: RuleTarget | QueryTarget, scope=None,
                 spec: ListSpec | None = None) -> tuple[str, ...]:
    """Refuse a target this node cannot run or the caller may not; returns the list's
    columns the target reads besides the identifier (a rule's local terms).

    Raises:
        UnknownRule, UnknownPartner: no such rule in the rule file, no such partner.
        RulesNotConfigured: the node's rule file is missing or invalid.
        ConfigError: the partner has no address on this node.
        NotPermitted: the scope does not allow the rule, or a purpose it would state.
        InvalidInput: a kind, predicate, selection or column that does not fit.
    """
    if isinstance(target, RuleTarget):
        if spec is not None and spec.auth_column:
            raise InvalidInput("a rule takes no authorisation column; give auth_column with a "
                               "partner query")
        rules = rule_file(ctx)
        purposes = rule_purposes(ctx, rules, target.rule)  # UnknownRule, or a purpose missing
        if scope is not None and not scope.may_run(target.rule):
            raise NotPermitted(f"this token may not run rule {target.rule!r}")
        for partner, purpose in purposes.items():
            if scope is not None and not scope.may_state(purpose):
                raise NotPermitted(f"rule {target.rule!r} states purpose {purpose!r} to "
                                   f"{partner}, which this token may not state")
        return tuple(sorted(rules.rules[target.rule].local_columns))
    partner = next((p for p in ctx.config.partners if p.id == target.partner), None)
    if partner is None:
        known = ", ".join(sorted(p.id for p in ctx.config.partners)) or "none"
        raise UnknownPartner(f"no partner {target.partner!r} in this node's config (partners: {known})")
    if scope is not None and not scope.may_state(target.purpose):
        raise NotPermitted(f"this token may not state purpose {target.purpose!r}")
    if not partner.address:
        raise ConfigError(f"partner {target.partner!r} has no address in this node's config: "
                          "it cannot be asked")
    if target.query_kind not in QUERY_KINDS:
        raise InvalidInput(f"kind is one of {', '.join(QUERY_KINDS)}")
    if target.query_kind == "predicate" and not target.predicate:
        raise InvalidInput("a predicate query needs a predicate (e.g. 缴费月数 >= 6)")
    if target.query_kind in ("membership", "bulk") and target.predicate:
        raise InvalidInput(f"a {target.query_kind} query takes no predicate; "
                           "use kind predicate or labeled")
    if target.select not in SELECTIONS:
        raise InvalidInput(f"select is one of {', '.join(SELECTIONS)}")
    if ctx.config.query.require_authorisation and spec is not None and not spec.auth_column:
        raise InvalidInput("this node requires an authorisation reference per applicant: give "
                           "auth_column (the consent or application number column)")
    return ()


def _bilingual(explanation: str) -> str:
    """A rule's explanation ("both": the English line, then the Chinese one)."""
    en, _, zh = explanation.partition("\n")
    return Bilingual(en, zh or en)


def run_target(ctx: NodeContext, target: RuleTarget | QueryTarget, spec: ListSpec, source,
               directory: Path, tables: dict[str, str], progress: Progress) -> dict:
    """Run `target` over `source` and save its tables in `directory` (names: `tables`);
    returns the job's counts. Raises what the rule runner or the query raises."""
    words = KeyWords()
    id_type = IdType(spec.id_type)
    if isinstance(target, RuleTarget):
        from node.rules.runner import run_rule
        run = run_rule(ctx, rule_file(ctx), target.rule, source, id_column=spec.id_column,
                       id_type=id_type, progress=progress)
        progress("writing", 0, None)
        facts = rule_facts(ctx, run.rule, run.text, run.queries, input=spec.file_name or spec.source,
                           id_column=spec.id_column, rows=run.rows, asked=run.asked)
        decisions = [(line, values, eligible, _bilingual(text), qids)
                     for line, values, eligible, text, qids in run.decisions]
        saved = {"result_rows": save_table(directory / tables["result"],
                                           decisions_table(words, run.columns, decisions), facts),
                 "rejects_rows": save_table(directory / tables["rejects"], rejects_table(
                     words, run.columns, spec.id_column, [Rejected(*r) for r in run.rejected]), facts)}
        return {"rows": run.rows, "asked": run.asked, **run.counts, "queries": len(run.queries),
                **saved}
    answered = ask_membership(ctx, partner=target.partner, dataset=target.dataset,
                              purpose=target.purpose, source=source, id_column=spec.id_column,
                              id_type=id_type, select=target.select, kind=target.query_kind,
                              predicate=target.predicate, auth_column=spec.auth_column,
                              progress=progress)
    progress("writing", 0, None)
    facts = {**answered.facts, "input": spec.file_name or spec.source}
    saved = {"result_rows": save_table(directory / tables["result"], answered.answers(words), facts),
             "rejects_rows": save_table(directory / tables["rejects"], answered.rejects(words), facts)}
    job = answered.job
    return {"rows": job.rows + job.invalid, "asked": job.asked, "matched_rows": job.matched_rows,
            "invalid": job.invalid, "query_id": job.query_id, "ledger_index": job.ledger_index,
            **saved}
