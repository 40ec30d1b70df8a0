"""Where datasets come from: CSV, Excel and SQL sources, and typed identifiers.

An agency's dataset (a graduate roll, a flexible-worker register, an enterprise list) is
read through a :class:`Source` — one streaming pass, bounded memory, line numbers a
person can look up, a SHA-256 fingerprint of what was read — and its identifier column is
validated and normalised by :func:`read_identifiers`, which accounts for every row as
valid or rejected-with-a-reason. An operator's input list (the applicants a query, a rule
or a consent audit asks about) is read by :func:`read_applicants`, with the same checks.

This package never imports ``node`` or ``protocols``: it only turns data into
normalised identifiers and the domain-separated bytes (:func:`encode`) the OPRF consumes.
"""

from __future__ import annotations

import os
from pathlib import Path

from adapters.base import Row, Source, SourceError
from adapters.csv_source import CsvSource, open_csv
from adapters.identifiers import (
    IdType,
    InvalidIdentifier,
    encode,
    normalise,
    synthetic_resident_id,
    synthetic_uscc,
)
from adapters.reader import Applicant, InvalidRow, ValidRow, read_applicants, read_identifiers
from adapters.sql_source import SqlSource, open_sql
from adapters.xlsx_source import XlsxSource, open_xlsx

__all__ = [
    "Applicant",
    "CsvSource",
    "IdType",
    "InvalidIdentifier",
    "InvalidRow",
    "Row",
    "Source",
    "SourceError",
    "SqlSource",
    "ValidRow",
    "XlsxSource",
    "encode",
    "normalise",
    "open_csv",
    "open_source",
    "open_sql",
    "open_xlsx",
    "read_applicants",
    "read_identifiers",
    "synthetic_resident_id",
    "synthetic_uscc",
]

_CSV_SUFFIXES = (".csv", ".tsv", ".txt")
_XLSX_SUFFIXES = (".xlsx", ".xlsm")


def open_source(location: str | os.PathLike[str], **options) -> Source:
    """Open a source by its location: a database URL ("scheme://...") or a file path
    whose suffix says CSV (.csv/.tsv/.txt; .tsv defaults to a tab delimiter) or Excel
    (.xlsx/.xlsm).

    ``options`` go to :func:`open_sql` (table, query, schema, params, batch_size),
    :func:`open_csv` (encoding, delimiter) or :func:`open_xlsx` (sheet, header_row).

    Raises:
        SourceError: unknown kind of location, plus whatever the opener raises.
    """
    text = os.fspath(location)
    if "://" in text:
        return open_sql(text, **options)
    suffix = Path(text).suffix.lower()
    if suffix in _CSV_SUFFIXES:
        if suffix == ".tsv":
            options.setdefault("delimiter", "\t")
        return open_csv(text, **options)
    if suffix in _XLSX_SUFFIXES or suffix == ".xls":
        return open_xlsx(text, **options)
    raise SourceError(f"cannot tell what kind of source {Path(text).name!r} is: expected a "
                      f"database URL or a file ending in "
                      f"{', '.join(_CSV_SUFFIXES + _XLSX_SUFFIXES)}")
