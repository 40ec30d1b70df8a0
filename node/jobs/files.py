"""Operator jobs over files: a membership query from an applicant list to a result file.

Each input row comes back with its answer; rows whose identifier is invalid go to a
separate report with line number and reason and are not asked. Identical identifiers
are asked once. The result file is written next to its final name and renamed into
place, so a failed query never leaves a half-written result behind.
"""
from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

from adapters import IdType, InvalidIdentifier, SourceError, encode, normalise
from adapters.headers import show_columns

from adapters.reader import INEXACT_NUMBER_REASON

from node.core.progress import no_progress
from node.asker import membership as asker
from node.asker.bulk import bulk as ask_bulk, bulk_is_faster
from node.policy.consent import consent_digest
from node.runtime.context import NodeContext
from node.storage.private_files import open_private

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


def _atomic_csv(path: Path):
    tmp = path.with_name(f".{path.name}.partial")
    # Results name applicants: owner-only from the first byte. Excel opens utf-8-sig.
    return tmp, open_private(tmp, "w", newline="", encoding="utf-8-sig")


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
    for column in (id_column, auth_column):
        if column and column not in source.columns:
            raise SourceError(f"column {column!r} not found; available columns: "
                              f"{show_columns(source.columns)}")
    if ctx.config.query.require_authorisation and not auth_column:
        raise ValueError("this node requires an authorisation reference per applicant: "
                         "give --auth-column (the consent or application number column)")
    rows: list[tuple[int, dict[str, str], int]] = []   # (line, values, index into asked)
    bad: list[tuple[int, str]] = []
    index: dict[bytes, int] = {}
    asked: list[bytes] = []
    consented: list[tuple[bytes, str]] = []  # one (identifier, reference) per row asked
    for row in source:
        ref = row.values.get(auth_column, "").strip() if auth_column else ""
        if auth_column and not ref:
            bad.append((row.line, "missing authorisation reference"))
            continue
        if id_column in row.inexact:
            bad.append((row.line, INEXACT_NUMBER_REASON))
            continue
        try:
            value = encode(id_type, normalise(id_type, row.values.get(id_column, "")))
        except InvalidIdentifier as exc:
            bad.append((row.line, exc.reason))
            continue
        i = index.setdefault(value, len(asked))
        if i == len(asked):
            asked.append(value)
        if auth_column:
            consented.append((value, ref))  # one person under several applications: each row
        rows.append((row.line, row.values, i))
        progress("reading", source.progress_position(), source.progress_total)

    result = _ask(ctx, partner, dataset, purpose, asked, progress, kind=kind, predicate=predicate,
                  consent=consent_digest(consented) if auth_column else None) if asked else None
    label_columns = list(dict.fromkeys(k for r in (result.labels or []) if r for k in r)) if result else []
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp, f = _atomic_csv(out)
    matched_rows = 0
    with f:
        w = csv.writer(f)
        w.writerow(["line", *source.columns, ANSWER_COLUMN, *label_columns])
        for line, values, i in rows:
            hit = bool(result.matched[i])
            matched_rows += hit
            if (select == "intersection" and not hit) or (select == "difference" and hit):
                continue
            answer = "in_dataset" if hit else "not_in_dataset"
            found = (result.labels[i] or {}) if result.labels else {}
            w.writerow([line, *(values.get(c, "") for c in source.columns), answer,
                        *(found.get(c, "") for c in label_columns)])
    os.replace(tmp, out)
    tmp, f = _atomic_csv(rejects)
    with f:
        w = csv.writer(f)
        w.writerow(["line", "reason"])
        w.writerows(bad)
    os.replace(tmp, rejects)
    return MembershipJob(
        query_id=result.query_id if result else "", asked=len(asked), rows=len(rows),
        invalid=len(bad), matched_rows=matched_rows, seconds=result.seconds if result else 0.0,
        version=result.version if result else 0, epoch=result.epoch if result else 0,
        bulk_suggested=bool(result) and kind == "membership" and "bulk" in result.kinds
        and bulk_is_faster(len(asked), result.rows))


def _ask(ctx, partner: str, dataset: str, purpose: str, asked: list[bytes], progress, *,
         kind: str, predicate: str | None, consent: str | None):
    """The query of `kind`: bulk PSI over the whole dataset, or a membership-kind query."""
    if kind == "bulk":
        return ask_bulk(ctx, partner, dataset, purpose, asked, progress, consent_digest=consent)
    return asker.membership(ctx, partner, dataset, purpose, asked, progress, kind=kind,
                            predicate=predicate, consent_digest=consent)
