"""Operator jobs over files: a membership query from an applicant list to a result file.

Each input row comes back with its answer; rows whose identifier is invalid go to a
separate report with line number and reason and are not asked. Identical identifiers
are asked once. The result file is written next to its final name and renamed into
place, so a failed query never leaves a half-written result behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from adapters import Applicant, IdType, read_applicants

from node.core.progress import no_progress
from node.asker import membership as asker
from node.asker.bulk import bulk as ask_bulk, bulk_is_faster
from node.policy.consent import consent_digest
from node.runtime.context import NodeContext
from node.storage.private_files import result_csv

ANSWER_COLUMN = "shuqiao_answer"


@dataclass
class MembershipJob:
    query_id: str
    asked: int            # distinct identifiers sent
    rows: int             # valid input rows
    invalid: int          # rows reported as invalid
    matched_rows: int     # rows whose identifier is in the partner's dataset
    seconds: float
    version: int
    epoch: int
    bulk_suggested: bool = False  # a long list, and the partner grants bulk: it would be faster


@dataclass
class _Batch:
    """An input list as asked: each distinct identifier once, each row pointing at it."""
    rows: list[tuple[int, dict[str, str], int]] = field(default_factory=list)  # line, values, index
    bad: list[tuple[int, str]] = field(default_factory=list)
    asked: list[bytes] = field(default_factory=list)
    consented: list[tuple[bytes, str]] = field(default_factory=list)  # (identifier, reference) per row


def write_rejects(path: Path, bad: Iterable[tuple[int, str]]) -> None:
    """The rows not asked: line and reason (never the value)."""
    with result_csv(path) as w:
        w.writerow(["line", "reason"])
        w.writerows(bad)


def _gather(applicants: Iterable[Applicant], source, progress) -> _Batch:
    batch, index = _Batch(), {}
    for a in applicants:
        if a.reason:
            batch.bad.append((a.line, a.reason))
            continue
        i = index.setdefault(a.identifier, len(batch.asked))
        if i == len(batch.asked):
            batch.asked.append(a.identifier)
        if a.reference:
            batch.consented.append((a.identifier, a.reference))  # one person, several applications: each row
        batch.rows.append((a.line, a.values, i))
        progress("reading", source.progress_position(), source.progress_total)
    return batch


def _write_answers(out: Path, columns: list[str], batch: _Batch, result, select: str) -> int:
    """Write the rows ``select`` keeps, each with its answer; returns the rows matched."""
    label_columns = list(dict.fromkeys(k for r in (result.labels or []) if r for k in r)) if result else []
    out.parent.mkdir(parents=True, exist_ok=True)
    matched_rows = 0
    with result_csv(out) as w:
        w.writerow(["line", *columns, ANSWER_COLUMN, *label_columns])
        for line, values, i in batch.rows:
            hit = bool(result.matched[i])
            matched_rows += hit
            if (select == "intersection" and not hit) or (select == "difference" and hit):
                continue
            answer = "in_dataset" if hit else "not_in_dataset"
            found = (result.labels[i] or {}) if result.labels else {}
            w.writerow([line, *(values.get(c, "") for c in columns), answer,
                        *(found.get(c, "") for c in label_columns)])
    return matched_rows


def run_membership(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                   id_column: str, id_type: IdType, out: Path, rejects: Path,
                   select: str = "all", kind: str = "membership", predicate: str | None = None,
                   auth_column: str | None = None, progress=no_progress) -> MembershipJob:
    """Ask `partner` which rows of `source` are in `dataset`; write `out` and `rejects`.

    `select` chooses the rows written: "all" (each with its answer), "intersection"
    (only rows in the dataset) or "difference" (only rows not in it).
    """
    if select not in ("all", "intersection", "difference"):
        raise ValueError("select must be all, intersection or difference")
    if kind == "bulk" and predicate:
        raise ValueError("a bulk query runs over the whole dataset: it takes no predicate")
    applicants = read_applicants(source, id_column, id_type, auth_column=auth_column)
    if ctx.config.query.require_authorisation and not auth_column:
        raise ValueError("this node requires an authorisation reference per applicant: "
                         "give --auth-column (the consent or application number column)")
    batch = _gather(applicants, source, progress)
    result = _ask(ctx, partner, dataset, purpose, batch.asked, progress, kind=kind,
                  predicate=predicate,
                  consent=consent_digest(batch.consented) if auth_column else None
                  ) if batch.asked else None
    matched_rows = _write_answers(out, list(source.columns), batch, result, select)
    write_rejects(rejects, batch.bad)
    return MembershipJob(
        query_id=result.query_id if result else "", asked=len(batch.asked), rows=len(batch.rows),
        invalid=len(batch.bad), matched_rows=matched_rows, seconds=result.seconds if result else 0.0,
        version=result.version if result else 0, epoch=result.epoch if result else 0,
        bulk_suggested=bool(result) and kind == "membership" and "bulk" in result.kinds
        and bulk_is_faster(len(batch.asked), result.rows))


def _ask(ctx, partner: str, dataset: str, purpose: str, asked: list[bytes], progress, *,
         kind: str, predicate: str | None, consent: str | None):
    """The query of `kind`: bulk PSI over the whole dataset, or a membership-kind query."""
    if kind == "bulk":
        return ask_bulk(ctx, partner, dataset, purpose, asked, progress, consent_digest=consent)
    return asker.membership(ctx, partner, dataset, purpose, asked, progress, kind=kind,
                            predicate=predicate, consent_digest=consent)
