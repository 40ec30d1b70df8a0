"""A batch job's answers, a page at a time, as the operator's console shows them.

A job saves its tables in neither language (node/jobs/saved.py: a word cell as its key, a
rule's explanation in both languages). A page reads the rows it shows from that table and
puts them in the reader's language; each row gets its decision as a word key (which the
page turns into a badge) and a plain-language explanation: the rule's own for a rule job,
and for a partner query what the answer means ("in flexible_workers at hrss").

Identifiers are shown masked (the first six and last four characters): the officer finds
an applicant by the application number and other columns; the downloads hold them whole.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

from node.jobs.results import Lang, Words

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


def _cell(value, lang: Lang):
    if isinstance(value, dict):
        if "w" in value:
            return value
        return value["zh" if lang is Lang.zh else "en"]
    return value


def read_page(saved: Path, *, lang: Lang | str, page: int, id_column: str,
              query: dict | None = None, explain=None) -> ResultPage:
    """Rows `page` (1-based, PAGE_SIZE each) of the saved table at `saved`.

    `query` (partner, dataset) is given for a partner-query job: its rows are explained by
    `explain(key, **values)`, the page's translator; a rule job's rows carry their own.
    """
    lang = Lang(lang)
    words = Words(lang)
    with open(saved, encoding="utf-8") as f:
        head = json.loads(f.readline())
        keys = [c["w"] if isinstance(c, dict) and "w" in c else None for c in head["columns"]]
        names = [words[k] if k else c for k, c in zip(keys, head["columns"])]
        first = (max(1, page) - 1) * PAGE_SIZE
        out = ResultPage(columns=[], queries=list(head.get("facts", {}).get("queries", [])))
        lines = []
        for i, line in enumerate(f):
            if first <= i < first + PAGE_SIZE:
                lines.append(line)
            out.total = i + 1
    out.pages = max(1, -(-out.total // PAGE_SIZE))
    out.page = min(max(1, page), out.pages)
    decision_at = next((i for i, k in enumerate(keys) if k in ("decision", "answer")), None)
    explanation_at = next((i for i, k in enumerate(keys) if k in ("explanation", "note")), None)
    hidden = {i for i, k in enumerate(keys) if k in ("line", "decision", "answer", "explanation", "note",
                                                     "query_ids")}
    out.columns = [n for i, n in enumerate(names) if i not in hidden]
    for line in lines:
        raw = [_cell(v, lang) for v in json.loads(line)]
        decision = raw[decision_at]["w"] if decision_at is not None and isinstance(raw[decision_at], dict) else None
        cells = []
        for i, v in enumerate(raw):
            if i in hidden:
                continue
            text = words[v["w"]] if isinstance(v, dict) else ("" if v is None else str(v))
            cells.append(mask(text) if names[i] == id_column and text else text)
        explanation = raw[explanation_at] if explanation_at is not None else ""
        explanation = words[explanation["w"]] if isinstance(explanation, dict) else (explanation or "")
        explanation = QUERY_REF.sub("", explanation)
        if query is not None and decision in ("yes", "no") and explain is not None:
            explanation = explain("explain." + decision, **query)
        out.rows.append({"line": raw[0], "cells": cells, "decision": decision,
                         "badge": DECISIONS.get(decision or "", "muted"), "explanation": explanation})
    return out
