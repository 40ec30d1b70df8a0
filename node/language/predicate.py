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

from node.language.evaluate import Condition, compile_condition, compile_predicate
from node.language.parser import BooleanParser, normalize, parse
from node.language.render import check_allowed, columns, format_column, format_literal, operators, render, to_canonical
from node.language.syntax import (ALL_OPS, COMPARISON_OPS, MAX_DEPTH, MAX_LENGTH, MAX_NODES, And, Comparison, In, Not,
                                  Or, Predicate, PredicateNotAllowed)
from node.language.tokens import ParseError, PredicateError

__all__ = [
    "MAX_LENGTH", "MAX_DEPTH", "MAX_NODES", "COMPARISON_OPS", "ALL_OPS",
    "PredicateError", "ParseError", "PredicateNotAllowed",
    "Comparison", "In", "Not", "And", "Or", "Predicate",
    "parse", "normalize", "to_canonical", "render", "columns", "operators",
    "check_allowed", "compile_predicate", "compile_condition", "Condition", "BooleanParser",
    "format_column", "format_literal",
]
