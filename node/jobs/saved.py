"""A job's tables, kept between its run and its downloads: saved once, rendered on demand.

A batch job's answers are downloaded later, in the format (csv, xlsx, json) and the
language (zh, en) each download asks for. So the run saves each table once, in neither
language: a cell that is a word of the result vocabulary (是/yes, 符合/eligible, the
headers 行号/line ...) is saved as the word's key (node/jobs/results.py), and a rule's
explanation in both languages. :func:`render` writes a saved table in a format and a
language through the one writer of result files (node/storage/result_files.py).

A saved table is a JSON-lines file, owner-only (it holds the operator's rows): the first
line is ``{"columns", "sheet", "facts"}``, then one JSON array per row, a word cell as
``{"w": key}`` and a bilingual cell as ``{"en": ..., "zh": ...}``.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Iterator

from node.jobs.results import Lang, Words
from node.storage.schema import open_private
from node.storage.result_files import ResultTable, write_result


class WordKey(str):
    """A cell or header that is a word of the result vocabulary, by its key."""


class Bilingual(str):
    """Text written for a reader in either language (a rule's explanation): English, Chinese."""

    def __new__(cls, en: str, zh: str) -> "Bilingual":
        self = super().__new__(cls, en)
        self.en, self.zh = en, zh
        return self


class KeyWords(Words):
    """Words that stay keys: the tables the jobs build with it are language-neutral."""

    def __getitem__(self, key: str) -> str:
        super().__getitem__(key)  # an unknown key fails here as with real words
        return WordKey(key)


def _encode(value: Any) -> Any:
    if isinstance(value, WordKey):
        return {"w": str(value)}
    if isinstance(value, Bilingual):
        return {"en": value.en, "zh": value.zh}
    return value


def _decode(value: Any, words: Words) -> Any:
    if isinstance(value, dict):
        if "w" in value:
            return words[value["w"]]
        return value["zh" if words.lang is Lang.zh else "en"]
    return value


def save_table(path: Path, table: ResultTable, facts: dict[str, Any]) -> int:
    """Save `table` (built with :class:`KeyWords`) and the facts of its query at `path`;
    returns the rows saved. Written next to `path` and renamed: never half there."""
    tmp = path.with_name(f".{path.name}.partial")
    rows = 0
    try:
        with open_private(tmp, "w", encoding="utf-8") as f:
            head = {"columns": [_encode(c) for c in table.columns], "sheet": _encode(table.sheet),
                    "facts": facts}
            f.write(json.dumps(head, ensure_ascii=False, default=str) + "\n")
            for row in table.rows:
                f.write(json.dumps([_encode(v) for v in row], ensure_ascii=False) + "\n")
                rows += 1
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return rows


def saved_facts(path: Path) -> dict[str, Any]:
    """The facts saved with a table."""
    with open(path, encoding="utf-8") as f:
        return json.loads(f.readline())["facts"]


def _rows(f, words: Words) -> Iterator[list]:
    for line in f:
        yield [_decode(v, words) for v in json.loads(line)]


def page(saved: Path, lang: Lang | str = Lang.zh, offset: int = 0,
         limit: int = 50) -> tuple[list[str], list[list]]:
    """The columns and rows ``offset`` to ``offset + limit`` of a saved table, in `lang`
    (a console's page of results; the file is read as a stream, never whole)."""
    words = Words(lang)
    with open(saved, encoding="utf-8") as f:
        head = json.loads(f.readline())
        rows = []
        for i, line in enumerate(f):
            if i >= offset + limit:
                break
            if i >= offset:
                rows.append([_decode(v, words) for v in json.loads(line)])
    return [_decode(c, words) for c in head["columns"]], rows


def render(saved: Path, out: Path, lang: Lang | str = Lang.zh) -> int:
    """Write the table saved at `saved` to `out` (format by its extension) in `lang`.

    Raises:
        ResultFormatError: an unknown extension, or more rows than a worksheet holds.
    """
    words = Words(lang)
    with open(saved, encoding="utf-8") as f:
        head = json.loads(f.readline())
        table = ResultTable([_decode(c, words) for c in head["columns"]], _rows(f, words),
                            _decode(head["sheet"], words))
        return write_result(out, table, words.info(head["facts"]))
