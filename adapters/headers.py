"""Column names fit to print: a header row that is really data is never echoed.

A file saved without a header row turns its first record into "column names": the
first applicant's 身份证号 and name would then appear in every "column not found;
available columns: ..." message. A header cell that validates as an identifier of any
supported type, or holds a long run of digits, marks the whole row as data, and such a
header is shown by position only ("column 1", "column 2", ...).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import date

from adapters.identifiers import IdType, InvalidIdentifier, normalise

__all__ = ["header_is_data", "looks_like_data", "show_column", "show_columns"]

# No clock in adapters: any birth date up to the end of time is plausible here.
_ANY_DAY = date(9999, 12, 31)
# Six or more digits in a row: part of an id, a phone or an account number, not a name.
_DIGIT_RUN = re.compile(r"\d{6,}")
_HINT = ("named by position: the first line looks like data, not column names; does the "
         "file have a header row?")


def looks_like_data(name: str) -> bool:
    """True when a header cell looks like a person's or an entity's data."""
    if _DIGIT_RUN.search(name):
        return True
    for kind in (IdType.CN_RESIDENT_ID, IdType.CN_USCC, IdType.PHONE_CN):
        try:
            normalise(kind, name, today=_ANY_DAY)
        except InvalidIdentifier:
            continue
        return True
    return False


def header_is_data(columns: Sequence[str]) -> bool:
    return any(looks_like_data(c) for c in columns)


def show_column(columns: Sequence[str], position: int) -> str:
    """How to name the column at 0-based `position` in a message."""
    if header_is_data(columns):
        return f"column {position + 1}"
    return f"column {columns[position]!r}"


def show_columns(columns: Sequence[str]) -> str:
    """The columns for an "available columns: ..." message; by position if the header is data."""
    if header_is_data(columns):
        return f"{', '.join(f'column {i}' for i in range(1, len(columns) + 1))} ({_HINT})"
    return ", ".join(repr(c) for c in columns)
