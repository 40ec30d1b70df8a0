"""Excel workbooks (.xlsx), read in openpyxl's streaming read-only mode.

Cells become text the way a person reading the sheet would write them: integral numbers
without ".0", dates as ISO 8601, booleans as TRUE/FALSE, formulas as their last cached
value (a workbook never opened in Excel after its formulas were written has no cached
value and gives "").

Identifiers stored as *numbers* are the classic trap: Excel keeps 15 significant digits,
so an 18-digit 身份证号 typed into a General-format cell has already lost its last digits
in the file. Such cells are returned as Excel holds them (never "repaired") and flagged
in :attr:`Row.inexact`, so the reader can reject them with a useful reason.

Fingerprint: the zip container needs random access, so the SHA-256 of the file is taken
in one sequential pass at open time, over the same open file handle that is then parsed.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import warnings
import zipfile
import zlib
from collections.abc import Iterator
from xml.etree.ElementTree import ParseError
from pathlib import Path
from typing import Any, BinaryIO

import openpyxl
from openpyxl.utils.exceptions import InvalidFileException

from adapters.base import Row, Source, SourceError, check_header, open_file
from adapters.limits import DEFAULT_LIMITS, ReadLimits
from adapters.xlsx_guard import check_workbook

__all__ = ["XlsxSource", "open_xlsx", "cell_text"]

_EXACT_LIMIT = 2**53
_HASH_CHUNK = 1 << 20
# What a damaged container or part raises from inside openpyxl, zipfile and zlib.
_DAMAGE = (InvalidFileException, zipfile.BadZipFile, zlib.error, ParseError, KeyError,
           ValueError, EOFError, TypeError, AttributeError, IndexError)
_DAMAGED = ("is damaged or is not a valid .xlsx file; open it in Excel or LibreOffice and "
            "save it again as .xlsx")


def cell_text(value: Any) -> tuple[str, bool]:
    """Convert an openpyxl cell value to text.

    Returns:
        (text, inexact): ``inexact`` is True for a float beyond 2**53, whose digits are
        not all meaningful.
    """
    if value is None:
        return "", False
    if isinstance(value, str):
        return value, False
    if isinstance(value, bool):
        return ("TRUE" if value else "FALSE"), False
    if isinstance(value, int):
        return str(value), False
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value)), abs(value) >= _EXACT_LIMIT
        return repr(value), False
    if isinstance(value, dt.datetime):
        if value.time() == dt.time(0) and value.tzinfo is None:
            return value.date().isoformat(), False
        return value.isoformat(), False
    if isinstance(value, (dt.date, dt.time)):
        return value.isoformat(), False
    return str(value), False


def _sha256_file(handle: BinaryIO) -> str:
    digest = hashlib.sha256()
    while chunk := handle.read(_HASH_CHUNK):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()


class XlsxSource(Source):
    """One worksheet of an .xlsx workbook; see :func:`open_xlsx`."""

    def __init__(self, path: Path, sheet: str | None, header_row: int,
                 limits: ReadLimits = DEFAULT_LIMITS) -> None:
        where = f"workbook '{path.name}'"
        self._limits = limits
        if path.suffix.lower() == ".xls":
            raise SourceError(f"{where} is in the old .xls format, which is not supported; "
                              "save it as .xlsx or as 'CSV UTF-8'")
        self._file: BinaryIO = open_file(path, where, "a workbook", lambda p: open(p, "rb"))
        self._workbook = None
        try:
            self._sha256 = _sha256_file(self._file)
            check_workbook(self._file, where, limits)  # bombs and damage, before parsing
            with warnings.catch_warnings():
                # e.g. "Workbook contains no default style": harmless for reading values.
                warnings.simplefilter("ignore", UserWarning)
                try:
                    self._workbook = openpyxl.load_workbook(
                        self._file, read_only=True, data_only=True)
                except _DAMAGE:
                    raise SourceError(f"{where} {_DAMAGED}") from None
            worksheets = {ws.title: ws for ws in self._workbook.worksheets}
            if not worksheets:
                raise SourceError(f"{where} has no worksheet")
            if sheet is None:
                worksheet = next(iter(worksheets.values()))
            elif sheet in worksheets:
                worksheet = worksheets[sheet]
            else:
                raise SourceError(f"{where} has no worksheet named {sheet!r}; available "
                                  f"sheets: {', '.join(repr(n) for n in worksheets)}")
            where = f"sheet '{worksheet.title}' of {where}"
            # The stored dimension is only a hint (some writers get it wrong), so it feeds
            # the progress bar but does not bound the rows read.
            total = worksheet.max_row
            worksheet.reset_dimensions()
            self._cells = worksheet.iter_rows(min_row=1, values_only=True)
            self._position = 0
            self._header_row = header_row
            self._where = where
            columns = self._read_header(where)
        except BaseException:
            self._release()
            raise
        super().__init__(where, columns, total)

    def _next_cells(self) -> tuple[Any, ...] | None:
        try:
            cells = next(self._cells, None)
        except _DAMAGE:
            raise SourceError(f"{self._where} {_DAMAGED} (after row {self._position})",
                              line=self._position + 1) from None
        if cells is not None:
            self._position += 1
            if self._position > self._limits.max_rows:
                raise SourceError(f"{self._where} has more than {self._limits.max_rows} rows; "
                                  "split it into smaller files", line=self._position)
        return cells

    def _read_header(self, where: str) -> list[str]:
        for _ in range(self._header_row):
            cells = self._next_cells()
            if cells is None:
                raise SourceError(f"{where} is empty; row {self._header_row} must hold the "
                                  "column names")
        names = [cell_text(value)[0].strip() for value in cells]
        if not any(names):
            raise SourceError(f"{where}: row {self._header_row} is empty; it must hold the "
                              "column names", line=self._header_row)
        return check_header(names, where, line=self._header_row)

    def _rows(self) -> Iterator[Row]:
        columns = self.columns
        width = len(columns)
        while (cells := self._next_cells()) is not None:
            line = self._position
            texts: list[str] = []
            inexact: list[str] = []
            for position, value in enumerate(cells):
                text, lossy = cell_text(value)
                if len(text) > self._limits.max_cell_chars:
                    raise SourceError(f"{self.description}: row {line}, column {position + 1} holds "
                                      f"more than {self._limits.max_cell_chars} characters",
                                      line=line)
                if position >= width:
                    if text.strip():
                        raise SourceError(
                            f"{self.description}: row {line} has a value in column "
                            f"{position + 1}, which has no header", line=line)
                    continue
                texts.append(text)
                if lossy:
                    inexact.append(columns[position])
            if not any(t.strip() for t in texts):
                continue
            texts.extend([""] * (width - len(texts)))
            yield Row(line, dict(zip(columns, texts)), frozenset(inexact))

    def _digest(self) -> str:
        return self._sha256

    def _release(self) -> None:
        if self._workbook is not None:
            self._workbook.close()
        self._file.close()

    def progress_position(self) -> int:
        return self._position


def open_xlsx(path: str | os.PathLike[str], sheet: str | None = None, *,
              header_row: int = 1, limits: ReadLimits = DEFAULT_LIMITS) -> XlsxSource:
    """Open one worksheet of an .xlsx workbook.

    Args:
        path: the workbook (.xlsx / .xlsm; the old binary .xls is refused).
        sheet: the worksheet name; None means the first worksheet (not the one that
            happened to be active when the file was saved).
        header_row: the 1-based row holding the column names (rows above it, e.g. a
            title, are ignored).
        limits: bounds on expanded size, rows and cell length (see
            :class:`adapters.limits.ReadLimits`); a workbook beyond them is refused
            before it is parsed, or as soon as reading reaches the bound.

    Raises:
        SourceError: missing or invalid file, unknown sheet (the message lists the
            sheets), empty sheet, header problems; while iterating, a value under a
            column without a header.

    Fully empty rows are skipped; ``Row.line`` is always the Excel row number.
    """
    if header_row < 1:
        raise SourceError("header_row must be 1 or more")
    return XlsxSource(Path(path), sheet, header_row, limits)
