"""A small, safe predicate language over an agency's own columns (the "predicate" kind).

    contribution_months >= 6 and status == "active"
    graduation_year in (2024, 2025, 2026)
    not (degree == "专科")
    缴费月数 >= 6 and `social insurance status` != "stopped"

Grammar (lowest precedence first; keywords are lowercase)::

    or_expr    := and_expr ("or" and_expr)*
    and_expr   := unary ("and" unary)*
    unary      := "not" unary | "(" or_expr ")" | comparison
    comparison := column ("==" | "!=" | "<" | "<=" | ">" | ">=") literal
                | column "in" "(" literal ("," literal)* [","] ")"
    column     := Unicode letters, digits (not first) and "_" | `backquoted name`
    literal    := -?[0-9]+(.[0-9]+)?  |  "double-quoted string" with \\" \\\\ \\n \\t \\r \\uXXXX

A column is always on the left and a literal on the right: no column-to-column
comparisons, no arithmetic, no function calls. The text is tokenised and parsed by hand
(never eval), within limits: MAX_LENGTH characters, MAX_DEPTH nested parentheses and
``not``, MAX_NODES nodes (boolean operators, comparisons and ``in`` elements). Every
syntax error is a :class:`ParseError` with the 1-based character ``position``.

Canonical form. ``parse`` returns a normalised, immutable AST: ``and``/``or`` flattened,
their operands deduplicated and sorted, double negation removed, ``in`` elements
deduplicated and sorted, numbers held as exact ``Decimal`` (``6`` and ``6.0`` are the
same literal). ``to_canonical`` prints it with single spaces and minimal parentheses, so
equivalent spellings give the same text: both parties and the ledger record that text.

Evaluation over rows of strings (as adapters deliver them) uses three-valued logic, as
SQL does with NULL. A comparison is *unknown* when its column is missing from the row,
or when the literal is a number and the cell is not a plain decimal number (after
trimming spaces and NFKC; no exponents, separators or NaN). ``not unknown`` is unknown;
``false and unknown`` is false; ``true or unknown`` is true; a row is selected only if
the whole predicate is *true*. So a row whose data cannot be compared never qualifies,
not even through ``not`` or ``!=``. Numeric comparisons are exact (Decimal); string
comparisons compare the cell exactly as delivered, ordering by code point. Evaluation
never raises on data, and no message from this module contains a cell value.
"""

from __future__ import annotations

import operator
import unicodedata
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Union

from .predicate_tokens import (  # noqa: F401  (re-exported: rules.py and callers use them)
    _MAX_NUMBER_CHARS, _NUMBER, KEYWORDS, ParseError, PredicateError, Token, _check_column,
    is_bare_identifier, tokenize,
)

__all__ = [
    "MAX_LENGTH", "MAX_DEPTH", "MAX_NODES", "COMPARISON_OPS", "ALL_OPS",
    "PredicateError", "ParseError", "PredicateNotAllowed",
    "Comparison", "In", "Not", "And", "Or", "Predicate",
    "parse", "normalize", "to_canonical", "render", "columns", "operators",
    "check_allowed", "compile_predicate", "compile_condition",
]

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
class And:
    operands: tuple["Predicate", ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        if len(self.operands) < 2:
            raise ValueError("'and' needs at least two operands")


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple["Predicate", ...]

    def __post_init__(self) -> None:
        object.__setattr__(self, "operands", tuple(self.operands))
        if len(self.operands) < 2:
            raise ValueError("'or' needs at least two operands")


Predicate = Union[Comparison, In, Not, And, Or]


# --- the parser ------------------------------------------------------------------------

def _describe(tok: Token) -> str:
    if tok.kind == "end":
        return "the end of the text"
    if tok.kind == "bracket":
        return "'['"
    if tok.kind in ("number", "string"):
        return f"the {tok.kind} {format_literal(tok.value)}"
    return repr(tok.value) if tok.kind in ("ident", "keyword") else f"'{tok.value}'"


class BooleanParser:
    """Recursive descent over ``or``/``and``/``not``/parentheses.

    ``node.rules`` extends it by overriding ``term`` (what an operand is). The parser
    enforces MAX_DEPTH and MAX_NODES as it goes, so recursion stays shallow.
    """

    max_length = MAX_LENGTH

    def __init__(self, text: str, *, rule_syntax: bool = False) -> None:
        if not isinstance(text, str):
            raise TypeError("the text must be a str")
        if len(text) > self.max_length:
            raise ParseError(f"longer than {self.max_length} characters", self.max_length + 1)
        self.text = text
        self.tokens = tokenize(text, rule_syntax=rule_syntax)
        self.index = 0
        self.nodes = 0

    # token helpers
    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.index + ahead, len(self.tokens) - 1)]

    def advance(self) -> Token:
        tok = self.peek()
        self.index += 1
        return tok

    def at_keyword(self, word: str) -> bool:
        tok = self.peek()
        return tok.kind == "keyword" and tok.value == word

    def expect(self, kind: str, what: str) -> Token:
        tok = self.peek()
        if tok.kind != kind:
            raise ParseError(f"expected {what}, found {_describe(tok)}", tok.position)
        return self.advance()

    def count(self, n: int = 1) -> None:
        self.nodes += n
        if self.nodes > MAX_NODES:
            raise ParseError(f"more than {MAX_NODES} nodes", self.peek().position)

    # grammar
    def parse(self):
        node = self.or_expr(0)
        tok = self.peek()
        if tok.kind != "end":
            hint = " (keywords are lowercase)" if tok.kind == "ident" and str(
                tok.value).lower() in KEYWORDS else ""
            raise ParseError(f"expected 'and', 'or' or the end, found {_describe(tok)}{hint}",
                             tok.position)
        return node

    def or_expr(self, nest: int):
        return self._chain("or", Or, lambda: self._chain("and", And, lambda: self.unary(nest)))

    def _chain(self, word: str, kind: type, operand: Callable[[], object]):
        items = [operand()]
        while self.at_keyword(word):
            self.advance()
            items.append(operand())
        if len(items) == 1:
            return items[0]
        self.count()
        return kind(tuple(items))

    def unary(self, nest: int):
        tok = self.peek()
        if tok.kind == "(" or self.at_keyword("not"):
            if nest >= MAX_DEPTH:
                raise ParseError(f"nested deeper than {MAX_DEPTH} levels of parentheses "
                                 "and 'not'", tok.position)
            self.advance()
            if tok.kind == "(":
                node = self.or_expr(nest + 1)
                if self.peek().kind != ")":
                    raise ParseError(f"expected ')' to close the '(' at column {tok.position}"
                                     f", found {_describe(self.peek())}", self.peek().position)
                self.advance()
                return node
            operand = self.unary(nest + 1)
            self.count()
            return Not(operand)
        return self.term()

    def term(self):
        return self.comparison()

    def comparison(self) -> Comparison | In:
        tok = self.peek()
        if tok.kind != "ident":
            hint = (f" (write a column named {tok.value!r} in backquotes: `{tok.value}`)"
                    if tok.kind == "keyword" else "")
            raise ParseError(f"expected a column name, found {_describe(tok)}{hint}",
                             tok.position)
        self.advance()
        op = self.peek()
        if op.kind == "keyword" and op.value == "in":
            self.advance()
            self.expect("(", "'(' after 'in'")
            values = [self.literal()]
            while self.peek().kind == ",":
                self.advance()
                if self.peek().kind == ")":
                    break
                values.append(self.literal())
            self.expect(")", "',' or ')' in the 'in' list")
            self.count(1 + len(values))
            return In(tok.value, tuple(values))
        if op.kind != "op":
            raise ParseError(f"expected a comparison operator (== != < <= > >= in) after "
                             f"column {tok.value!r}, found {_describe(op)}", op.position)
        self.advance()
        value = self.literal()
        self.count()
        return Comparison(tok.value, op.value, value)

    def literal(self) -> Decimal | str:
        tok = self.peek()
        if tok.kind not in ("number", "string"):
            raise ParseError(f"expected a number or a double-quoted string, found "
                             f"{_describe(tok)}", tok.position)
        return self.advance().value


def parse(text: str) -> Predicate:
    """Parse and normalise a predicate.

    Raises:
        ParseError: with ``position``, for any syntax error or exceeded limit.
    """
    return normalize(BooleanParser(text).parse())


# --- normal form and text --------------------------------------------------------------

def normalize(node: Predicate) -> Predicate:
    """Flatten, deduplicate and sort and/or; remove double negation. Semantics unchanged."""
    if isinstance(node, Not):
        inner = normalize(node.operand)
        return inner.operand if isinstance(inner, Not) else Not(inner)
    if isinstance(node, (And, Or)):
        kind = type(node)
        flat: dict[str, Predicate] = {}
        for child in map(normalize, node.operands):
            for leaf in child.operands if isinstance(child, kind) else (child,):
                flat.setdefault(render(leaf), leaf)
        if len(flat) == 1:
            return next(iter(flat.values()))
        return kind(tuple(flat[k] for k in sorted(flat)))
    if isinstance(node, (Comparison, In)):
        return node
    raise TypeError(f"not a predicate node: {type(node).__name__}")


def format_column(name: str) -> str:
    return name if is_bare_identifier(name) else f"`{name}`"


def format_literal(value: Decimal | str) -> str:
    if isinstance(value, Decimal):
        text = format(value, "f")
        if "." in text:
            text = text.rstrip("0").rstrip(".")
        return "0" if text in ("-0", "") else text
    out = []
    for c in value:
        if c in '"\\':
            out.append("\\" + c)
        elif c in "\n\t\r":
            out.append({"\n": "\\n", "\t": "\\t", "\r": "\\r"}[c])
        elif unicodedata.category(c) in ("Cc", "Zl", "Zp"):
            out.append(f"\\u{ord(c):04x}")
        else:
            out.append(c)
    return '"' + "".join(out) + '"'


_PRECEDENCE = {Or: 1, And: 2, Not: 3}


def render(node, leaf: Callable[[object], str] | None = None) -> str:
    """Print an AST as written, minimal parentheses (``leaf`` prints foreign leaves)."""
    if isinstance(node, Comparison):
        return f"{format_column(node.column)} {node.op} {format_literal(node.value)}"
    if isinstance(node, In):
        return f"{format_column(node.column)} in ({', '.join(map(format_literal, node.values))})"
    prec = _PRECEDENCE.get(type(node))
    if prec is None:
        if leaf is None:
            raise TypeError(f"not a predicate node: {type(node).__name__}")
        return leaf(node)

    def sub(child) -> str:
        text = render(child, leaf)
        return f"({text})" if _PRECEDENCE.get(type(child), 9) < prec + (
            type(node) is Not) else text

    if isinstance(node, Not):
        return "not " + sub(node.operand)
    return f" {type(node).__name__.lower()} ".join(sub(c) for c in node.operands)


def to_canonical(node: Predicate) -> str:
    """The canonical text: equal for equivalent spellings; ``parse`` reads it back."""
    return render(normalize(node))


# --- policy ----------------------------------------------------------------------------

def _walk(node: Predicate) -> Iterator[tuple[str | None, str]]:
    """Yield (column or None, operator name) for every node, in order."""
    if isinstance(node, Comparison):
        yield node.column, node.op
    elif isinstance(node, In):
        yield node.column, "in"
    elif isinstance(node, Not):
        yield None, "not"
        yield from _walk(node.operand)
    else:
        yield None, type(node).__name__.lower()
        for child in node.operands:
            yield from _walk(child)


def columns(node: Predicate) -> frozenset[str]:
    return frozenset(c for c, _ in _walk(node) if c is not None)


def operators(node: Predicate) -> frozenset[str]:
    return frozenset(op for _, op in _walk(node))


def check_allowed(node: Predicate, allowed_columns: set[str] | frozenset[str],
                  allowed_ops: set[str] | frozenset[str] | None = None) -> None:
    """Refuse a predicate that reaches outside the policy's allow-list.

    Args:
        allowed_columns: columns the partner may filter on.
        allowed_ops: names from ALL_OPS ("==", "in", "not", "and", ...); None allows all.

    Raises:
        PredicateNotAllowed: naming the first offending column or operator.
        ValueError: ``allowed_ops`` names an unknown operator (a policy typo).
    """
    if allowed_ops is not None and not set(allowed_ops) <= ALL_OPS:
        unknown = ", ".join(sorted(map(repr, set(allowed_ops) - ALL_OPS)))
        raise ValueError(f"unknown operator names in the allow-list: {unknown}")
    for column, op in _walk(normalize(node)):
        if column is not None and column not in allowed_columns:
            raise PredicateNotAllowed(
                f"column {column!r} is not allowed in predicates on this dataset",
                column=column)
        if allowed_ops is not None and op not in allowed_ops:
            raise PredicateNotAllowed(
                f"operator {op!r} is not allowed in predicates on this dataset", operator=op)


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
