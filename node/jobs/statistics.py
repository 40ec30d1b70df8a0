"""Operator jobs for the statistics kinds: an applicant list in, figures or answers out.

An aggregate's figures file holds each group's figures beside their noise bounds; a
threshold check's result holds every input row with its answer (是/否/无登记收入, or 无效
with the reason for a row that was not asked). Both name their query and its ledger
position (node/jobs/results.py); rows not asked also go to the rejects file.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from adapters import IdType, read_applicants

from node.asker import statistics as stats
from node.core.progress import no_progress
from node.datasets.statistics_rows import parse_int
from node.jobs.results import (Lang, Rejected, Words, figures_table, query_facts,
                               write_rejects)
from node.runtime.context import NodeContext
from node.storage.result_files import ResultTable, result_format, write_result


@dataclass
class Listing:
    """An input list in file order: (line, values, identifier, threshold, reason) per row;
    a row with a reason was not asked."""
    entries: list[tuple[int, dict[str, str], bytes, int | None, str]] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    description: str = ""

    @property
    def valid(self) -> list[tuple[int, dict[str, str], bytes, int | None, str]]:
        return [e for e in self.entries if not e[4]]

    @property
    def rejected(self) -> list[Rejected]:
        return [Rejected(line, values, reason) for line, values, _, _, reason in self.entries if reason]


@dataclass
class StatisticsJob:
    result: object               # stats.AggregateResult or stats.ThresholdResult
    facts: dict
    listing: Listing
    counts: dict[str, int] = field(default_factory=dict)  # threshold: answers by word key


def read_listing(source, id_column: str, id_type: IdType,
                 threshold_column: str | None = None) -> Listing:
    """Every row of ``source``; with ``threshold_column``, a row's amount must be a whole number."""
    listing = Listing(columns=list(source.columns), description=source.description)
    extra = [threshold_column] if threshold_column else []
    for a in read_applicants(source, id_column, id_type, columns=extra):
        reason, limit = a.reason, None
        if not reason and threshold_column:
            limit = parse_int(a.values.get(threshold_column, ""))
            if limit is None or abs(limit) >= 2**62 or threshold_column in a.inexact:
                reason = (f"{threshold_column} is not a whole number "
                          "(digits only, no separators or decimals)")
        listing.entries.append((a.line, a.values, a.identifier, limit, reason))
    return listing


def run_aggregate(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                  id_column: str, id_type: IdType, value: str, ops: list[str], group_by: str,
                  out: Path | None, rejects: Path | None, lang: Lang | str = Lang.zh,
                  progress=no_progress) -> StatisticsJob:
    """Count / sum / mean over the list ∩ the partner's dataset; the figures to ``out``."""
    for path in (out, rejects):
        if path:
            result_format(path)
    listing = read_listing(source, id_column, id_type)
    r = stats.aggregate(ctx, partner, dataset, purpose, [e[2] for e in listing.valid],
                        value=value, ops=ops, group_by=group_by, progress=progress)
    facts = query_facts(ctx, r.query_id, kind="aggregate", partner=partner, dataset=dataset,
                        version=r.version, epoch=r.epoch, purpose=purpose, value=value or None,
                        group_by=group_by or None, input=listing.description, id_column=id_column,
                        rows=len(listing.entries), asked=r.asked, invalid=len(listing.rejected),
                        epsilon=r.epsilon, count_noise_bound=r.count_noise_bound,
                        sum_noise_bound=r.sum_noise_bound if set(r.ops) & {"sum", "mean"} else None,
                        min_group_size=r.min_group_size)
    words = Words(lang)
    if out:
        write_result(out, figures_table(words, r, group_by), words.info(facts))
    if rejects:
        write_rejects(rejects, words, listing.columns, id_column, listing.rejected, facts)
    return StatisticsJob(r, facts, listing)


def run_threshold(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                  id_column: str, id_type: IdType, threshold_column: str, out: Path,
                  rejects: Path, lang: Lang | str = Lang.zh, progress=no_progress) -> StatisticsJob:
    """Per applicant: is the partner's registered income at least the row's amount?"""
    result_format(out), result_format(rejects)
    listing = read_listing(source, id_column, id_type, threshold_column)
    valid = listing.valid
    if not valid:
        raise ValueError("nothing to ask: no valid row in the input")
    r = stats.threshold(ctx, partner, dataset, purpose, [e[2] for e in valid],
                        [e[3] for e in valid], progress=progress)
    facts = query_facts(ctx, r.query_id, kind="threshold", partner=partner, dataset=dataset,
                        version=r.version, epoch=r.epoch, purpose=purpose,
                        threshold_column=threshold_column, input=listing.description,
                        id_column=id_column, rows=len(listing.entries), asked=len(valid),
                        invalid=len(listing.rejected))
    words, counts = Words(lang), {"yes": 0, "no": 0, "no_income": 0}
    answers = iter(r.answers)

    def rows():
        for line, values, _, _, reason in listing.entries:
            if reason:
                key = "invalid"
            else:
                answer = next(answers)
                key = "no_income" if answer is None else "yes" if answer else "no"
                counts[key] += 1
            yield [line, *(values.get(c, "") for c in listing.columns), words[key], reason]
    table = ResultTable([words["line"], *listing.columns, words["answer"], words["note"]],
                        rows(), words["results"])
    write_result(out, table, words.info(facts))
    write_rejects(rejects, words, listing.columns, id_column, listing.rejected, facts)
    return StatisticsJob(r, facts, listing, counts)


def run_cardinality(ctx: NodeContext, *, partner: str, dataset: str, purpose: str, source,
                    id_column: str, id_type: IdType, out: Path | None, rejects: Path | None,
                    lang: Lang | str = Lang.zh, progress=no_progress) -> StatisticsJob:
    """How many of the list are in the partner's dataset (maybe noised, with its bound)."""
    from node.asker.cardinality import cardinality
    for path in (out, rejects):
        if path:
            result_format(path)
    listing = read_listing(source, id_column, id_type)
    ids = sorted({e[2] for e in listing.valid})
    r = cardinality(ctx, partner, dataset, purpose, ids, progress)
    facts = query_facts(ctx, r.query_id, kind="cardinality", partner=partner, dataset=dataset,
                        purpose=purpose, input=listing.description, id_column=id_column,
                        rows=len(listing.entries), asked=len(ids), invalid=len(listing.rejected),
                        epsilon=r.epsilon)
    words = Words(lang)
    if out:
        table = ResultTable([words["in_dataset"], words["noise_bound"], words["asked"]],
                            [[r.count, r.noise_bound, len(ids)]], words["figures"])
        write_result(out, table, words.info(facts))
    if rejects:
        write_rejects(rejects, words, listing.columns, id_column, listing.rejected, facts)
    return StatisticsJob(r, facts, listing)
