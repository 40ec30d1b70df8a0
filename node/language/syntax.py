"""The predicate language's syntax tree: comparisons, `in`, not/and/or, with their limits (see predicate.py)."""
from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import ClassVar, Union

from node.language.tokens import PredicateError, _check_column

MAX_LENGTH = 1000
MAX_DEPTH = 16
MAX_NODES = 64
COMPARISON_OPS = ("==", "!=", "<", "<=", ">", ">=")
ALL_OPS = frozenset(COMPARISON_OPS + ("in", "not", "and", "or"))


class PredicateNotAllowed(PredicateError):
    """The predicate uses a column or an operator the policy does not allow."""

    def __init__(self, message: str, *, column: str | None = None,
                 operator: str | None = None) -> None:
        self.column = column
        self.operator = operator
        super().__init__(message)

    def __reduce__(self):
        return (_not_allowed, (self.args[0], self.column, self.operator))


def _not_allowed(message: str, column: str | None, op: str | None) -> PredicateNotAllowed:
    return PredicateNotAllowed(message, column=column, operator=op)


# --- the AST ---------------------------------------------------------------------------

def _check_literal(value: object) -> Decimal | str:
    if isinstance(value, bool):
        raise ValueError("a literal is a number or a string, not a boolean")
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise ValueError("a number literal must be finite")
        return value
    if isinstance(value, str):
        if any(unicodedata.category(c) == "Cs" for c in value):
            raise ValueError("a string literal cannot hold lone surrogates")
        return value
    raise ValueError("a literal is an int, a Decimal or a str")


@dataclass(frozen=True, slots=True)
class Comparison:
    """``column op value``; ``value`` is a Decimal (numeric comparison) or a str."""

    column: str
    op: str
    value: Decimal | str

    def __post_init__(self) -> None:
        _check_column(self.column)
        if self.op not in COMPARISON_OPS:
            raise ValueError(f"unknown comparison operator {self.op!r}")
        object.__setattr__(self, "value", _check_literal(self.value))


def _literal_key(v: Decimal | str) -> tuple[int, Decimal | str]:
    return (0, v) if isinstance(v, Decimal) else (1, v)


@dataclass(frozen=True, slots=True)
class In:
    """``column in (values)``; values are kept deduplicated, numbers first, sorted."""

    column: str
    values: tuple[Decimal | str, ...]

    def __post_init__(self) -> None:
        _check_column(self.column)
        values = {_literal_key(_check_literal(v)): None for v in self.values}
        if not values:
            raise ValueError("'in' needs at least one value")
        object.__setattr__(self, "values", tuple(v for _, v in sorted(values)))


@dataclass(frozen=True, slots=True)
class Not:
    operand: "Predicate"


@dataclass(frozen=True, slots=True)
class _Connective:
    """Two or more operands joined by ``word`` (and, or)."""

    operands: tuple["Predicate", ...]
    word: ClassVar[str] = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        if len(self.operands) < 2:
            raise ValueError(f"'{self.word}' needs at least two operands")


@dataclass(frozen=True, slots=True)
class And(_Connective):
    word: ClassVar[str] = "and"


@dataclass(frozen=True, slots=True)
class Or(_Connective):
    word: ClassVar[str] = "or"


Predicate = Union[Comparison, In, Not, And, Or]
