"""From source rows to normalised identifiers, accounting for every row.

Two readers, one identifier check (:func:`row_identifier`), so an id that Excel stored
as a lossy number is refused wherever a file is read:

* :func:`read_identifiers`, for a dataset being registered: each data row comes out
  either as a :class:`ValidRow` (normalised id plus the requested attributes) or as an
  :class:`InvalidRow` (line number and a reason that never contains the value). Nothing
  is silently dropped or fixed: an id that fails validation, an empty id cell, a lossy
  number and a repeated id are all reported.
* :func:`read_applicants`, for an operator's input list (a query, a rule, a consent
  audit): every row comes out as an :class:`Applicant`, asked about or refused with a
  reason. A repeated id is not refused there: each row gets its answer.

Duplicates are tracked through a 16-byte BLAKE2b digest of each normalised id (roughly
120 bytes of memory per distinct id, ~0.6 GB for a 5-million-row dataset); the chance
that two different ids collide is about n**2 / 2**129, i.e. nil.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date

from adapters.base import Row, Source, SourceError
from adapters.headers import show_column, show_columns
from adapters.identifiers import IdType, InvalidIdentifier, encode, normalise

__all__ = ["Applicant", "ValidRow", "InvalidRow", "read_applicants", "read_identifiers",
           "row_identifier"]

INEXACT_NUMBER_REASON = ("identifier cell holds a number too large for the spreadsheet "
                         "to store exactly (digits lost); format the column as text "
                         "and re-enter the values")


@dataclass(frozen=True, slots=True)
class ValidRow:
    """A row whose identifier validated.

    Attributes:
        line: the row's line (see :class:`adapters.base.Row`).
        normalised_id: the canonical identifier (feed ``identifiers.encode`` to the OPRF).
        attrs: the requested attribute columns, as text.
    """

    line: int
    normalised_id: str
    attrs: dict[str, str]


@dataclass(frozen=True, slots=True)
class InvalidRow:
    """A rejected row: where it is and why, never what it held.

    Attributes:
        line: the row's line (see :class:`adapters.base.Row`).
        reason: a short fixed phrase ("wrong length", "duplicate identifier (first seen
            on line 7)", ...); never the value or any part of it.
    """

    line: int
    reason: str


def _check_columns(source: Source, id_column: str, attributes: Sequence[str]) -> None:
    available = show_columns(source.columns)
    for role, name in [("identifier", id_column)] + [("attribute", a) for a in attributes]:
        if name not in source.columns:
            raise SourceError(f"{source.description}: {role} column {name!r} not found; "
                              f"available columns: {available}")
    if id_column in attributes:
        raise SourceError(f"the identifier column {id_column!r} cannot also be an "
                          "attribute: raw identifiers never leave the node")
    repeated = sorted({a for a in attributes if list(attributes).count(a) > 1})
    if repeated:
        raise SourceError(f"attribute columns listed twice: {', '.join(map(repr, repeated))}")


def read_identifiers(
    source: Source,
    id_column: str,
    id_type: IdType | str,
    attributes: Sequence[str] = (),
    *,
    today: date | None = None,
) -> Iterator[ValidRow | InvalidRow]:
    """Validate and normalise the identifier column of ``source``, row by row.

    Args:
        source: an open, unread source (it is consumed).
        id_column: the column holding the identifiers.
        id_type: their declared type.
        attributes: further columns to carry along (not the id column).
        today: reference date for birth-date checks (tests inject it).

    Returns:
        An iterator of ValidRow / InvalidRow in source order. Repeats of an identifier
        already seen are InvalidRow("duplicate identifier (first seen on line N)").

    Raises:
        SourceError: immediately, if a column is missing (the message lists the
            available ones) or the attribute list is unusable; later, whatever the
            source raises while being read.
    """
    id_type = IdType(id_type)
    attributes = tuple(attributes)
    _check_columns(source, id_column, attributes)
    return _generate(source, id_column, id_type, attributes, today)


def _generate(source: Source, id_column: str, id_type: IdType,
              attributes: tuple[str, ...], today: date | None
              ) -> Iterator[ValidRow | InvalidRow]:
    first_seen: dict[bytes, int] = {}
    for row in source:
        try:
            normalised = row_identifier(row, id_column, id_type, today)
        except InvalidIdentifier as exc:
            yield InvalidRow(row.line, exc.reason)
            continue
        key = hashlib.blake2b(normalised.encode("utf-8"), digest_size=16).digest()
        first = first_seen.setdefault(key, row.line)
        if first != row.line:
            yield InvalidRow(row.line, f"duplicate identifier (first seen on line {first})")
            continue
        attrs = {name: row.values[name] for name in attributes}
        holding_nul = [name for name, value in attrs.items() if "\x00" in value]
        if holding_nul:  # text never holds NUL: binary data or a broken export, not a value
            yield InvalidRow(row.line, f"{show_column(source.columns, source.columns.index(holding_nul[0]))} "
                                       "holds a NUL character")
            continue
        yield ValidRow(row.line, normalised, attrs)


def row_identifier(row: Row, id_column: str, id_type: IdType, today: date | None = None) -> str:
    """The normalised identifier of ``row``.

    Raises:
        InvalidIdentifier: the cell is a spreadsheet number that lost digits (reason
            :data:`INEXACT_NUMBER_REASON`; its digits are never "repaired"), or the value
            does not validate.
    """
    if id_column in row.inexact:
        raise InvalidIdentifier(INEXACT_NUMBER_REASON, id_type)
    return normalise(id_type, row.values.get(id_column, ""), today=today)


@dataclass(frozen=True, slots=True)
class Applicant:
    """One row of an operator's input list.

    Attributes:
        line: the row's line in the file.
        values: its cells (the operator's own file: written back next to the answers).
        normalised_id: the canonical identifier; "" when the row is refused.
        identifier: the typed OPRF input (``identifiers.encode``); b"" when refused.
        reference: the authorisation reference, stripped ("" without a reference column).
        reason: why the row is not asked ("" when it is); never holds the value.
        inexact: the columns whose cell was a spreadsheet number that lost digits.
    """

    line: int
    values: dict[str, str]
    normalised_id: str = ""
    identifier: bytes = b""
    reference: str = ""
    reason: str = ""
    inexact: frozenset[str] = frozenset()


def read_applicants(source: Source, id_column: str, id_type: IdType | str, *,
                    auth_column: str | None = None, columns: Sequence[str] = (),
                    today: date | None = None) -> Iterator[Applicant]:
    """Every row of an operator's input list, asked about or refused with a reason.

    Args:
        source: an open, unread source (it is consumed).
        id_column: the identifier column; ``id_type`` its declared type.
        auth_column: the authorisation reference column, if rows need one; a row without
            a reference is refused ("missing authorisation reference").
        columns: further columns the caller reads (they must exist).

    Raises:
        SourceError: immediately, if a column is missing (by position if the header is
            data); later, whatever the source raises while being read.
    """
    id_type = IdType(id_type)
    for column in (id_column, auth_column, *columns):
        if column and column not in source.columns:
            raise SourceError(f"column {column!r} not found; available columns: "
                              f"{show_columns(source.columns)}")
    return _applicants(source, id_column, id_type, auth_column, today)


def _applicants(source: Source, id_column: str, id_type: IdType, auth_column: str | None,
                today: date | None) -> Iterator[Applicant]:
    for row in source:
        reference = row.values.get(auth_column, "").strip() if auth_column else ""
        if auth_column and not reference:
            yield Applicant(row.line, row.values, reason="missing authorisation reference",
                            inexact=row.inexact)
            continue
        try:
            normalised = row_identifier(row, id_column, id_type, today)
        except InvalidIdentifier as exc:
            yield Applicant(row.line, row.values, reference=reference, reason=exc.reason,
                            inexact=row.inexact)
            continue
        yield Applicant(row.line, row.values, normalised, encode(id_type, normalised), reference,
                        inexact=row.inexact)
