"""`shuqiao rule run`: multi-agency eligibility rules over an applicant list.

A rule file holds `[rules]` (name = 'rule text', see node/rules/language.py) and `[purposes]`
(name = purpose code stated to the partners). Running a rule asks each partner source
once, about every valid applicant (asking fewer, based on other sources' answers, would
tell a partner those answers), looks local sources up in this node's own datasets, and
decides each applicant with the provenance an appeal needs: the query ids that decided.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from adapters import IdType, encode, read_applicants

from node.core.config import read_toml
from node.core.progress import no_progress
from node.asker import membership as asker
from node.language import predicate as pred
from node.runtime.context import NodeContext
from node.storage.private_files import result_csv
from node.datasets.registration import current_version, iter_rows
from node.policy.querylog import QueryRecord
from node.rules.language import (Answer, RuleError, SourceQuery, evaluate, explain, parse_rule, plan,
                                 refused)


@dataclass
class RuleFile:
    rules: dict
    purposes: dict[str, str]


def load_rule_file(path: Path) -> RuleFile:
    raw = read_toml(path, "rule file", RuleError)
    unknown = set(raw) - {"rules", "purposes"}
    if unknown:
        raise RuleError(f"{path}: unknown table(s) {', '.join(sorted(unknown))}; "
                        "a rule file has [rules] and [purposes]")
    rules = {name: parse_rule(name, text) for name, text in raw.get("rules", {}).items()}
    return RuleFile(rules, dict(raw.get("purposes", {})))


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
        keep = pred.compile_predicate(pred.parse(q.predicate)) if q.predicate else (lambda a: True)
        members = {subject for subject, attrs in iter_rows(conn, version.id, ctx.kek) if keep(attrs)}
    record.version = version.version
    answer = {x: x in members for x in ids}
    record.outcome, record.matched = "answered", sum(answer.values())
    record.write(ctx)
    return Answer(record.query_id, answer)


def run_rule(ctx: NodeContext, rule_file: RuleFile, name: str, source, *, id_column: str,
             id_type: IdType, out: Path, progress=no_progress) -> dict:
    if name not in rule_file.rules:
        raise RuleError(f"no rule {name!r} in the rule file (rules: {', '.join(rule_file.rules)})")
    rule = rule_file.rules[name]
    purpose = rule_file.purposes.get(name)
    rows = list(read_applicants(source, id_column, id_type, columns=sorted(rule.local_columns)))
    ids = list(dict.fromkeys(a.normalised_id for a in rows if not a.reason))
    answers: dict[SourceQuery, Answer] = {}
    for q in plan(rule):
        if q.is_local(ctx.config.node.id):
            answers[q] = _local_answer(ctx, q, ids)
            continue
        if not purpose:
            raise RuleError(f"rule {name!r} asks {q.partner}; give its purpose in [purposes]")
        result = asker.membership(ctx, q.partner, q.dataset, purpose,
                                  [encode(id_type, x) for x in ids], progress,
                                  kind="predicate" if q.predicate else "membership",
                                  predicate=q.predicate)
        answers[q] = Answer(result.query_id, dict(zip(ids, map(bool, result.matched))))
    counts = {"eligible": 0, "not_eligible": 0, "undetermined": 0}
    with result_csv(out) as w:  # names applicants
        w.writerow(["line", *source.columns, "decision", "explanation", "query_ids"])
        for row in rows:
            d = (refused(rule, row.reason) if row.reason else
                 evaluate(rule, answers, row.values, id_column=id_column, id_type=id_type))
            label = {True: "eligible", False: "not_eligible", None: "undetermined"}[d.eligible]
            counts[label] += 1
            qids = ";".join(dict.fromkeys(e.query_id for e in d.provenance if e.query_id))
            w.writerow([row.line, *(row.values.get(c, "") for c in source.columns), label,
                        explain(d), qids])
    return {"rule": name, "rows": len(rows), "asked": len(ids),
            "queries": {q.text: a.query_id for q, a in answers.items()}, **counts}
