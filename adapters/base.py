"""What every dataset source offers: a header, a single streaming pass of rows, progress
and a fingerprint of what was read.

A source is opened eagerly (so a missing file, a bad sheet name or an unreachable
database fails at once, and ``columns`` is known before any row is read), then iterated
exactly once. Rows carry the line number a person would look up in an editor or in
Excel, so a rejected row can be found and fixed.

Privacy rule for every adapter: messages may name files, sheets, tables and columns, never
cell values.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import TypeVar

T = TypeVar("T")

__all__ = ["Row", "Source", "SourceError", "check_header", "open_file"]


class SourceError(Exception):
    """A dataset source cannot be read as asked. The message says what to do about it.

    Attributes:
        line: the 1-based line (CSV), row (spreadsheet) or row ordinal (SQL) concerned,
            or None when the problem is not tied to one row.
    """

    def __init__(self, message: str, *, line: int | None = None) -> None:
        self.line = line
        super().__init__(message)


@dataclass(frozen=True, slots=True)
class Row:
    """One data row.

    Attributes:
        line: where the row is, as a person would see it: for files the header is line 1
            and the first data row line 2 (a quoted field spanning lines counts from its
            first line); for SQL the 1-based ordinal of the row in the result.
        values: column name -> cell text ("" for an empty cell or SQL NULL).
        inexact: names of columns whose cell was a spreadsheet number too large to be
            held exactly (beyond 2**53), so digits may already have been lost — the
            classic fate of an id column not formatted as text in Excel.
    """

    line: int
    values: dict[str, str]
    inexact: frozenset[str] = field(default=frozenset())


def open_file(path: Path, where: str, kind: str, opener: Callable[[Path], T]) -> T:
    """``opener(path)``, with a missing file, a directory or no permission as a SourceError.

    Args:
        where: the source as messages name it; ``kind`` what the file should be ("a CSV file").
    """
    try:
        return opener(path)
    except FileNotFoundError:
        raise SourceError(f"{where} not found (looked for {path})") from None
    except IsADirectoryError:
        raise SourceError(f"{path} is a directory, not {kind}") from None
    except PermissionError:
        raise SourceError(f"no permission to read {path}") from None


def check_header(names: list[str], where: str, *, line: int = 1) -> list[str]:
    """Validate header names (already stripped) and return them.

    Trailing unnamed columns are dropped (spreadsheets and CSV exports often carry them);
    callers must then refuse data in those columns. Unnamed columns in the middle and
    duplicate names are errors.
    """
    while names and names[-1] == "":
        names = names[:-1]
    if not names:
        raise SourceError(f"{where}: the header (line {line}) is empty; the first line must "
                          "hold the column names", line=line)
    from adapters.headers import header_is_data
    seen: dict[str, int] = {}
    for position, name in enumerate(names, start=1):
        if name == "":
            raise SourceError(f"{where}: column {position} of the header has no name", line=line)
        if name in seen:
            if header_is_data(names):  # never echo a data row's cells
                raise SourceError(
                    f"{where}: line {line} looks like data, not column names (columns "
                    f"{seen[name]} and {position} hold the same value); add a header row",
                    line=line)
            raise SourceError(
                f"{where}: duplicate column name {name!r} (columns {seen[name]} and "
                f"{position}); rename one of them", line=line)
        seen[name] = position
    return names


class Source(abc.ABC):
    """A dataset read once, row by row, with bounded memory.

    Attributes:
        description: a human-readable name for messages (file, sheet, table; never a
            password).
        columns: the column names, in source order.
        progress_total: the value ``progress_position()`` reaches at the end, or None if
            unknown. Units are ``progress_unit`` ("bytes" for CSV, "rows" otherwise).
    """

    progress_unit: str = "rows"

    def __init__(self, description: str, columns: list[str], progress_total: int | None) -> None:
        self.description = description
        self.columns = columns
        self.progress_total = progress_total
        self._started = False
        self._fingerprint: str | None = None
        self._closed = False

    # -- what subclasses provide -------------------------------------------------------
    @abc.abstractmethod
    def _rows(self) -> Iterator[Row]:
        """Yield every row; called once."""

    @abc.abstractmethod
    def _digest(self) -> str:
        """The SHA-256 hex fingerprint, called after ``_rows`` is exhausted."""

    @abc.abstractmethod
    def _release(self) -> None:
        """Close files, cursors and connections; must be idempotent."""

    @abc.abstractmethod
    def progress_position(self) -> int:
        """How far reading has got, in ``progress_unit``."""

    # -- the interface -----------------------------------------------------------------
    def __iter__(self) -> Iterator[Row]:
        if self._started:
            raise SourceError(f"{self.description} can only be read once; open it again")
        if self._closed:
            raise SourceError(f"{self.description} is closed")
        self._started = True
        return self._iterate()

    def _iterate(self) -> Iterator[Row]:
        yield from self._rows()
        self._fingerprint = self._digest()
        self.close()

    def fingerprint(self) -> str:
        """SHA-256 hex of the raw file bytes (files) or of the canonical row stream (SQL).

        Raises:
            SourceError: if the source has not been read to the end.
        """
        if self._fingerprint is None:
            raise SourceError(
                f"the fingerprint of {self.description} is only known after every row "
                "has been read")
        return self._fingerprint

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._release()

    def __enter__(self) -> Source:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"
