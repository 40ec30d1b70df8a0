"""Operator jobs over files: a membership query from an applicant list to a result file.

Every input row comes back in the result with its answer (是/否, or 无效 with the reason
for a row that was not asked; ``--select`` keeps only one kind of valid answer); rows
whose identifier is invalid also go to a separate rejects file, with their other columns
so an officer can act on them, never the identifier. Identical identifiers are asked
once. Files are written in the format their extension names (node/jobs/results.py), and
only after the query: a failed query never leaves a half-written result behind.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from adapters import Applicant, IdType, read_applicants

from node.core.progress import no_progress
from node.asker import membership as asker
from node.asker.bulk import bulk as ask_bulk, bulk_is_faster
from node.jobs.results import Lang, Rejected, Words, query_facts, rejects_table
from node.policy.consent import consent_digest
from node.runtime.context import NodeContext
from node.storage.result_files import ResultTable, result_format, write_result

SELECTIONS = ("all", "intersection", "difference")


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
    ledger_index: int | None = None  # the query's place in this node's ledger
    predicate: str = ""
    bulk_suggested: bool = False  # a long list, and the partner grants bulk: it would be faster


@dataclass
class _Batch:
    """An input list as asked: each distinct identifier once, each row pointing at it."""
    rows: list[tuple[int, dict[str, str], int]] = field(default_factory=list)  # line, values, index
    bad: list[Rejected] = field(default_factory=list)
    order: list[tuple[int, bool]] = field(default_factory=list)  # (index in rows or bad, valid)
    asked: list[bytes] = field(default_factory=list)
    consented: list[tuple[bytes, str]] = field(default_factory=list)  # (identifier, reference) per row


def _gather(applicants: Iterable[Applicant], source, progress) -> _Batch:
    batch, index = _Batch(), {}
    for a in applicants:
        progress("reading", source.progress_position(), source.progress_total)
        if a.reason:
            batch.order.append((len(batch.bad), False))
            batch.bad.append(Rejected(a.line, a.values, a.reason))
            continue
        i = index.setdefault(a.identifier, len(batch.asked))
        if i == len(batch.asked):
            batch.asked.append(a.identifier)
        if a.reference:
            batch.consented.append((a.identifier, a.reference))  # one person, several applications: each row
        batch.order.append((len(batch.rows), True))
        batch.rows.append((a.line, a.values, i))
    return batch


def _answer_rows(words: Words, columns: list[str], batch: _Batch, result, select: str,
                 label_columns: list[str]):
    """Each input row in file order with its answer; invalid rows only when all are kept."""
    for k, valid in batch.order:
        if not valid:
            if select == "all":
                r = batch.bad[k]
                yield [r.line, *(r.values.get(c, "") for c in columns), words["invalid"],
                       *([""] * len(label_columns)), r.reason]
            continue
        line, values, i = batch.rows[k]
        hit = bool(result.matched[i])
        if (select == "intersection" and not hit) or (select == "difference" and hit):
            continue
        found = (result.labels[i] or {}) if result.labels else {}
        yield [line, *(values.get(c, "") for c in columns), words["yes" if hit else "no"],
               *(found.get(c, "") for c in label_columns), ""]


def _answers_table(words: Words, columns: list[str], batch: _Batch, result,
                   select: str) -> ResultTable:
    labels = result.labels if result else None
    label_columns = list(dict.fromkeys(k for r in (labels or []) if r for k in r))
    return ResultTable([words["line"], *columns, words["answer"], *label_columns, words["note"]],
                       _answer_rows(words, columns, batch, result, select, label_columns),
                       words["results"])


@dataclass
class MembershipAnswers:
    """A membership query over an input list, answered and not yet written: its counts
    (`job`), the facts naming the query, and its tables in any language."""
    job: MembershipJob
    facts: dict
    columns: list[str]
    id_column: str
    select: str
    _batch: _Batch = field(repr=False)
    _result: object = field(repr=False)

    def answers(self, words: Words) -> ResultTable:
        """Every input row (as `select` keeps them) with its answer, in file order."""
        return _answers_table(words, self.columns, self._batch, self._result, self.select)

    def rejects(self, words: Words) -> ResultTable:
        """The rows not asked, without their identifier."""
        return rejects_table(words, self.columns, self.id_column, self._batch.bad)

    def write(self, out: Path, rejects: Path, lang: Lang | str = Lang.zh) -> None:
        words = Words(lang)
        write_result(out, self.answers(words), words.info(self.facts))
        write_result(rejects, self.rejects(words), words.info(self.facts))


def run_membership(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                   id_column: str, id_type: IdType, out: Path, rejects: Path,
                   select: str = "all", kind: str = "membership", predicate: str | None = None,
                   auth_column: str | None = None, lang: Lang | str = Lang.zh,
                   progress=no_progress) -> MembershipJob:
    """Ask `partner` which rows of `source` are in `dataset`; write `out` and `rejects`.

    `select` chooses the rows written: "all" (each with its answer, invalid rows too),
    "intersection" (only rows in the dataset) or "difference" (only rows not in it).
    """
    result_format(out), result_format(rejects)  # a wrong extension fails before anything is asked
    answered = ask_membership(ctx, partner=partner, dataset=dataset, purpose=purpose,
                              source=source, id_column=id_column, id_type=id_type, select=select,
                              kind=kind, predicate=predicate, auth_column=auth_column,
                              progress=progress)
    answered.write(out, rejects, lang)
    return answered.job


def ask_membership(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                   id_column: str, id_type: IdType, select: str = "all",
                   kind: str = "membership", predicate: str | None = None,
                   auth_column: str | None = None, progress=no_progress) -> MembershipAnswers:
    """Ask `partner` which rows of `source` are in `dataset`; nothing is written.

    Raises:
        ValueError: a bad `select`, `kind` or `predicate`, or a missing `auth_column`
            where the node requires one.
        adapters.SourceError: the input cannot be read.
        PartnerError: the partner refused, failed or could not be reached.
    """
    if select not in SELECTIONS:
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
    job = MembershipJob(
        query_id=result.query_id if result else "", asked=len(batch.asked), rows=len(batch.rows),
        invalid=len(batch.bad), matched_rows=sum(bool(result.matched[i]) for _, _, i in batch.rows)
        if result else 0, seconds=result.seconds if result else 0.0,
        version=result.version if result else 0, epoch=result.epoch if result else 0,
        predicate=(result.predicate if result else "") or predicate or "",
        bulk_suggested=bool(result) and kind == "membership" and "bulk" in result.kinds
        and bulk_is_faster(len(batch.asked), result.rows))
    facts = query_facts(ctx, job.query_id, kind=kind, partner=partner, dataset=dataset,
                        version=job.version, epoch=job.epoch, purpose=purpose,
                        predicate=job.predicate or None, select=select,
                        input=source.description, id_column=id_column, rows=job.rows + job.invalid,
                        asked=job.asked, matched_rows=job.matched_rows, invalid=job.invalid)
    job.ledger_index = facts["ledger_index"]
    return MembershipAnswers(job, facts, list(source.columns), id_column, select, batch, result)


def _ask(ctx, partner: str, dataset: str, purpose: str, asked: list[bytes], progress, *,
         kind: str, predicate: str | None, consent: str | None):
    """The query of `kind`: bulk PSI over the whole dataset, or a membership-kind query."""
    if kind == "bulk":
        return ask_bulk(ctx, partner, dataset, purpose, asked, progress, consent_digest=consent)
    return asker.membership(ctx, partner, dataset, purpose, asked, progress, kind=kind,
                            predicate=predicate, consent_digest=consent)
