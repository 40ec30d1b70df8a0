"""Evaluating a predicate over rows of strings, with three-valued logic (see predicate.py)."""
from __future__ import annotations

import operator
import unicodedata
from collections.abc import Callable, Mapping
from decimal import Decimal

from node.language.tokens import _MAX_NUMBER_CHARS, _NUMBER
from node.language.syntax import And, Comparison, In, Not, Or, Predicate

# --- evaluation ------------------------------------------------------------------------

_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le,
        ">": operator.gt, ">=": operator.ge}


def _number(cell: object) -> Decimal | None:
    """The cell as an exact number, or None when it is not a plain decimal number."""
    if type(cell) is not str:
        if isinstance(cell, int) and not isinstance(cell, bool):
            return Decimal(cell)
        return cell if isinstance(cell, Decimal) and cell.is_finite() else None
    text = cell.strip()
    if len(text) > _MAX_NUMBER_CHARS:
        return None
    if not _NUMBER.fullmatch(text):
        if text.isascii():
            return None
        text = unicodedata.normalize("NFKC", text).strip()
        if len(text) > _MAX_NUMBER_CHARS or not _NUMBER.fullmatch(text):
            return None
    return Decimal(text)


Condition = Callable[[Mapping[str, str]], "bool | None"]


def compile_condition(node: Predicate) -> Condition:
    """Compile to a three-valued function: True, False or None (unknown)."""
    if isinstance(node, Comparison):
        column, compare, value = node.column, _OPS[node.op], node.value
        if isinstance(value, Decimal):
            def numeric(row):
                n = _number(row.get(column))
                return None if n is None else compare(n, value)
            return numeric

        def textual(row):
            cell = row.get(column)
            return compare(cell, value) if type(cell) is str else None
        return textual
    if isinstance(node, In):
        column = node.column
        numbers = frozenset(v for v in node.values if isinstance(v, Decimal))
        strings = frozenset(v for v in node.values if isinstance(v, str))

        def member(row):
            cell = row.get(column)
            unknown = False
            if strings:
                if type(cell) is str:
                    if cell in strings:
                        return True
                else:
                    unknown = True
            if numbers:
                n = _number(cell)
                if n is None:
                    unknown = True
                elif n in numbers:
                    return True
            return None if unknown else False
        return member
    if isinstance(node, Not):
        inner = compile_condition(node.operand)

        def negate(row):
            v = inner(row)
            return None if v is None else not v
        return negate
    if isinstance(node, (And, Or)):
        parts = tuple(map(compile_condition, node.operands))
        decisive = isinstance(node, Or)  # the value that settles the result at once

        def combine(row):
            result = not decisive
            for part in parts:
                v = part(row)
                if v is decisive:
                    return decisive
                if v is None:
                    result = None
            return result
        return combine
    raise TypeError(f"not a predicate node: {type(node).__name__}")


def compile_predicate(node: Predicate) -> Callable[[Mapping[str, str]], bool]:
    """A row filter: True only when the predicate is true for the row (unknown → False)."""
    condition = compile_condition(node)

    def selects(row: Mapping[str, str]) -> bool:
        return condition(row) is True
    return selects
