"""Predicates as canonical text, and what a predicate touches: its columns and operators, checked against a grant."""
from __future__ import annotations

import unicodedata
from collections.abc import Callable, Iterator
from decimal import Decimal

from node.language.tokens import is_bare_identifier
from node.language.syntax import ALL_OPS, And, Comparison, In, Not, Or, Predicate, PredicateNotAllowed

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
