"""Result files: a table and the query it answers, in the format the file's extension names.

Every command that writes a result for an operator (answers, decisions, figures, rejected
rows) writes it here, so every such file is owner-only from its first byte (it names
applicants: :mod:`node.storage.schema`), written next to its final name and
renamed into place once complete (a failed run leaves no half-written result), and
carries the facts of its query (query id, ledger position, ...):

``.csv``    UTF-8 with a BOM (Excel opens it as such), the header on the first line and
            nothing but the table, so Excel, pandas and import tools read it as is; the
            query's facts in a sidecar ``<name>.meta.json`` (e.g. ``result.csv.meta.json``).
``.jsonl``  one JSON object per row (column -> value); the facts in the same sidecar.
``.json``   one object: ``{"query": {facts}, "columns": [...], "rows": [{...}, ...]}``.
``.xlsx``   a workbook: the table on its first sheet, the facts on a second sheet
            (e.g. "查询信息"), one labelled line each.

In a workbook, text stays text: a cell beginning with "=" is never a formula, an
identifier never becomes a number; figures (counts, sums) are numbers. Characters a
workbook cannot hold (control characters) are left out of its cells.
"""
from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from node.core.errors import InvalidInput
from node.storage.schema import open_private

FORMATS = (".csv", ".xlsx", ".json", ".jsonl")
XLSX_MAX_ROWS = 1_048_576  # a worksheet's rows, the header included
SIDECAR_SUFFIX = ".meta.json"


class ResultFormatError(InvalidInput, ValueError):
    """A result file that cannot be written in the format its name asks for (the node's
    hierarchy, node/core/errors.py; still a ValueError for callers that catch one)."""


@dataclass
class ResultTable:
    """The rows of a result: one value per column (text, a number, or None for empty)."""

    columns: list[str]
    rows: Iterable[Sequence[Any]]
    sheet: str = "results"


@dataclass
class ResultInfo:
    """The facts of a result's query: JSON values under stable English keys, labelled in
    the reader's language on a workbook's second sheet."""

    facts: dict[str, Any]
    labels: dict[str, str] = field(default_factory=dict)
    sheet: str = "query"


def result_format(path: str | os.PathLike[str]) -> str:
    """The format ``path`` names by its extension. Check it before asking anyone anything.

    Raises:
        ResultFormatError: an extension other than .csv, .xlsx, .json or .jsonl.
    """
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise ResultFormatError(f"result file {Path(path).name!r}: the extension names its format; "
                                f"use one of {', '.join(FORMATS)}")
    return suffix


def sidecar(path: str | os.PathLike[str]) -> Path | None:
    """Where a .csv or .jsonl result keeps its query's facts (None: inside the file)."""
    path = Path(path)
    return path.with_name(path.name + SIDECAR_SUFFIX) if result_format(path) in (".csv", ".jsonl") else None


def write_result(path: str | os.PathLike[str], table: ResultTable, info: ResultInfo) -> int:
    """Write ``table`` and ``info`` to ``path`` in its format; returns the rows written.

    Raises:
        ResultFormatError: an unknown extension, or more rows than a worksheet holds.
    """
    path = Path(path)
    fmt = result_format(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = ResultTable(unique_columns(table.columns), table.rows, table.sheet)
    writer = {".csv": _write_csv, ".jsonl": _write_jsonl, ".json": _write_json,
              ".xlsx": _write_xlsx}[fmt]
    with _replacing(path, "w" if fmt != ".xlsx" else "wb") as f:
        rows = writer(f, table, info)
    if (meta := sidecar(path)) is not None:
        with _replacing(meta, "w") as f:
            json.dump({**info.facts, "columns": table.columns}, f, ensure_ascii=False, indent=2,
                      default=str)
            f.write("\n")
    return rows


def unique_columns(columns: Sequence[str]) -> list[str]:
    """The header with a repeated name numbered ("结果", "结果_2"): an operator's own column
    may bear the name of an answer column, and a JSON row cannot hold one key twice."""
    seen: set[str] = set()
    out = []
    for name in columns:
        unique, n = name, 1
        while unique in seen:
            n += 1
            unique = f"{name}_{n}"
        seen.add(unique)
        out.append(unique)
    return out


class _replacing:
    """A private file written at ``.<name>.partial`` and renamed onto ``path`` on success."""

    def __init__(self, path: Path, mode: str) -> None:
        self.path, self.mode = path, mode
        self.tmp = path.with_name(f".{path.name}.partial")

    def __enter__(self):
        kwargs = {} if "b" in self.mode else {"newline": "", "encoding": "utf-8"}
        self.file = open_private(self.tmp, self.mode, **kwargs)
        return self.file

    def __exit__(self, exc_type, *_) -> None:
        self.file.close()
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def _cell(value: Any) -> Any:
    return "" if value is None else value


def _write_csv(f, table: ResultTable, info: ResultInfo) -> int:
    f.write("\ufeff")  # the BOM: Excel reads the file as UTF-8 (Chinese headers intact)
    w = csv.writer(f)
    w.writerow(table.columns)
    n = 0
    for n, row in enumerate(table.rows, 1):
        w.writerow([_cell(v) for v in row])
    return n


def _write_jsonl(f, table: ResultTable, info: ResultInfo) -> int:
    n = 0
    for n, row in enumerate(table.rows, 1):
        f.write(json.dumps(dict(zip(table.columns, row)), ensure_ascii=False) + "\n")
    return n


def _write_json(f, table: ResultTable, info: ResultInfo) -> int:
    """One object, written row by row (a result of millions of rows is never held twice)."""
    f.write('{"query": ' + json.dumps(info.facts, ensure_ascii=False, default=str)
            + ',\n "columns": ' + json.dumps(table.columns, ensure_ascii=False) + ',\n "rows": [')
    n = 0
    for n, row in enumerate(table.rows, 1):
        f.write(("\n  " if n == 1 else ",\n  ")
                + json.dumps(dict(zip(table.columns, row)), ensure_ascii=False))
    f.write("\n ]}\n" if n else "]}\n")
    return n


def _write_xlsx(f, table: ResultTable, info: ResultInfo) -> int:
    from openpyxl import Workbook  # loaded only when a workbook is asked for
    wb = Workbook(write_only=True)
    sheet = wb.create_sheet(_sheet_title(table.sheet))
    sheet.append([_text_cell(sheet, c) for c in table.columns])
    n = 0
    try:
        for n, row in enumerate(table.rows, 1):
            if n >= XLSX_MAX_ROWS:
                raise ResultFormatError(f"more than {XLSX_MAX_ROWS - 1} rows do not fit in an "
                                        ".xlsx worksheet; write .csv or .jsonl instead")
            sheet.append([_xlsx_value(sheet, v) for v in row])
    except BaseException:
        _discard(sheet)
        raise
    facts = wb.create_sheet(_sheet_title(info.sheet))
    for key, value in info.facts.items():
        label = _text_cell(facts, info.labels.get(key, key))
        if isinstance(value, list) and not all(isinstance(v, dict) for v in value):
            value = "; ".join("" if v is None else str(v) for v in value)
        if isinstance(value, list):  # e.g. a rule's queries: a small table under its label
            facts.append([label])
            keys = list(dict.fromkeys(k for item in value for k in item))
            facts.append([None, *(_text_cell(facts, info.labels.get(k, k)) for k in keys)])
            for item in value:
                facts.append([None, *(_xlsx_value(facts, item.get(k)) for k in keys)])
        else:
            facts.append([label, _xlsx_value(facts, value)])
    wb.save(f)
    return n


def _discard(sheet) -> None:
    """Close a write-only sheet and delete the temporary file openpyxl streams its rows
    to: it holds the applicants' rows."""
    try:
        sheet.close()
    finally:
        if getattr(sheet, "_writer", None) is not None:
            sheet._writer.cleanup()


def _sheet_title(title: str) -> str:
    return "".join(c for c in title if c not in "[]:*?/\\")[:31] or "sheet"


def _xlsx_value(sheet, value: Any):
    if value is None or isinstance(value, bool):
        return None if value is None else str(value).lower()
    if isinstance(value, (int, float)):
        return value
    return _text_cell(sheet, str(value))


def _text_cell(sheet, text: str):
    """A cell that holds ``text`` as text: never a formula, never a number."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
    cell = WriteOnlyCell(sheet, value=ILLEGAL_CHARACTERS_RE.sub("", text))
    cell.data_type = "s"  # openpyxl makes "=..." a formula; an operator's cell is data
    return cell
