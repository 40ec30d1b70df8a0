"""A batch job's answers, a page at a time, as the operator's console shows them.

A page reads the rows it shows through the jobs' engine (node/jobs/queue.result_page, in
the reader's language); each row gets its decision as a word key (which the page turns
into a badge and the reader's word) and a plain-language explanation: the rule's own for
a rule job (the query ids it cites are listed once above the table, not on every row),
and for a partner query what the answer means ("in flexible_workers at hrss").

Identifiers are shown masked (the first six and last four characters): the officer finds
an applicant by the application number and other columns; the downloads hold them whole.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from node.jobs.queue import TABLES, Job, job_dir, result_page
from node.jobs.results import Lang, Words
from node.jobs.saved import saved_facts
from node.runtime.context import NodeContext

PAGE_SIZE = 20
# "（查询 <uuid>）" / " (query <uuid>)" in a rule's explanation: the page lists each query once
QUERY_REF = re.compile(r"\s*[（(](?:查询|query) [0-9a-f-]{36}[)）]")
DECISIONS = {"eligible": "ok", "yes": "ok", "not_eligible": "bad", "no": "muted",
             "undetermined": "warn", "invalid": "warn"}


@dataclass
class ResultPage:
    columns: list[str]              # the operator's columns, in the reader's language
    rows: list[dict] = field(default_factory=list)  # line, cells, decision (key), explanation
    total: int = 0                  # rows in the table
    page: int = 1
    pages: int = 1
    queries: list[dict] = field(default_factory=list)  # source, query_id, ledger_index


def mask(identifier: str) -> str:
    """An identifier with all but its first six and last four characters hidden."""
    s = identifier.strip()
    if len(s) <= 4:
        return "*" * len(s)
    if len(s) < 12:
        return s[:2] + "*" * (len(s) - 4) + s[-2:]
    return s[:6] + "*" * (len(s) - 10) + s[-4:]


def read_page(ctx: NodeContext, job: Job, *, lang: Lang | str, page: int, explain=None,
              decision: str | None = None) -> ResultPage:
    """Rows of `page` (1-based, PAGE_SIZE each) of a done job's answers, in `lang`; only
    the rows with `decision` (a key of DECISIONS) if given.

    A partner-query job's rows are explained by `explain(key, **values)` (the page's
    translator); a rule job's rows carry their own explanation.

    Raises:
        JobConflict: the job has no results (not done, expired, files not on this node).
    """
    lang = Lang(lang)
    words = Words(lang)
    if decision not in DECISIONS:
        decision = None
    total = int(job.counts.get("result_rows") or 0)
    page = max(1, page)
    found = result_page(ctx, job, lang=lang, offset=(page - 1) * PAGE_SIZE, limit=PAGE_SIZE)
    names = found["columns"]
    key_of = {words[k]: k for k in ("line", "decision", "answer", "explanation", "note", "query_ids")}
    keys = [key_of.get(n) for n in names]
    decision_at = next((i for i, k in enumerate(keys) if k in ("decision", "answer")), None)
    explanation_at = next((i for i, k in enumerate(keys) if k in ("explanation", "note")), None)
    saved = job_dir(ctx, job.id) / TABLES["result"]
    rows = found["rows"]
    if decision is not None and decision_at is not None:
        rows, total = _with_decision(saved, words, decision_at, decision, (page - 1) * PAGE_SIZE)
    pages = max(1, -(-total // PAGE_SIZE))
    if page > pages:  # past the end: the last page instead
        return read_page(ctx, job, lang=lang, page=pages, explain=explain, decision=decision)
    decided = {words[k]: k for k in DECISIONS}
    id_column = job.params["list"]["id_column"]
    target = job.params["target"]
    out = ResultPage([n for n, k in zip(names, keys) if k is None], total=total, page=page, pages=pages,
                     queries=list(saved_facts(saved).get("queries", [])))
    for raw in rows:
        found_decision = decided.get(raw[decision_at]) if decision_at is not None else None
        cells = ["" if v is None else str(v) for v, k in zip(raw, keys) if k is None]
        cells = [mask(c) if name == id_column and c else c for c, name in zip(cells, out.columns)]
        explanation = QUERY_REF.sub("", str(raw[explanation_at] or "")) if explanation_at is not None else ""
        if job.kind == "query" and found_decision in ("yes", "no") and explain is not None:
            explanation = explain("explain." + found_decision, partner=target["partner"],
                                  dataset=target["dataset"])
        out.rows.append({"line": raw[0], "cells": cells, "decision": found_decision,
                         "badge": DECISIONS.get(found_decision or "", "muted"), "explanation": explanation})
    return out


def _with_decision(saved: Path, words: Words, at: int, decision: str, offset: int) -> tuple[list[list], int]:
    """The rows (in `words`' language) from `offset` of those whose decision cell is the
    word `decision`, and how many there are: one pass over the saved table
    (node/jobs/saved.py: JSON lines, a word cell as {"w": key}, a bilingual one as
    {"en", "zh"})."""
    def cell(v):
        if isinstance(v, dict):
            return words[v["w"]] if "w" in v else v["zh" if words.lang is Lang.zh else "en"]
        return v
    rows, n = [], 0
    with open(saved, encoding="utf-8") as f:
        f.readline()
        for line in f:
            raw = json.loads(line)
            if not (isinstance(raw[at], dict) and raw[at].get("w") == decision):
                continue
            if offset <= n < offset + PAGE_SIZE:
                rows.append([cell(v) for v in raw])
            n += 1
    return rows, n
