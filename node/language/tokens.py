"""The predicate language's tokens: what node/language/predicate.py and node/rules/language.py parse.

Hand-written scanning (never eval): identifiers are Unicode letters, digits and "_" or a
`backquoted name`; numbers are plain decimals; strings are double-quoted with escapes.
Every error is a ParseError with the 1-based character position.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from decimal import Decimal

from node.core.errors import InvalidInput

KEYWORDS = frozenset({"and", "or", "not", "in"})
_MAX_NUMBER_CHARS = 64
_DIGITS = frozenset("0123456789")
_NUMBER = re.compile(r"[+-]?[0-9]+(?:\.[0-9]+)?", re.ASCII)


def _check_column(name: object) -> None:
    if not isinstance(name, str) or not name or name != name.strip() or "`" in name or any(
            unicodedata.category(c) in ("Cc", "Cs") for c in name):
        raise ValueError("a column name must be non-empty text without backquotes, control "
                         "characters or surrounding spaces")


class PredicateError(InvalidInput, ValueError):
    """Base class of this module's errors."""


class ParseError(PredicateError):
    """The text is not a valid predicate. ``position`` is 1-based, in characters."""

    def __init__(self, message: str, position: int) -> None:
        self.message = message
        self.position = position
        super().__init__(f"{message} (at column {position})")

    def __reduce__(self):
        return (ParseError, (self.message, self.position))


@dataclass(frozen=True, slots=True)
class Token:
    """kind: ident, number, string, op, keyword, '(', ')', ',', '.', bracket, end."""

    kind: str
    value: object
    position: int  # 1-based
    end: int = 0  # 1-based position just past the token (bracket: of its inner text)


def _ident_start(c: str) -> bool:
    return c == "_" or unicodedata.category(c).startswith("L")


def _ident_char(c: str) -> bool:
    if c == "_":
        return True
    category = unicodedata.category(c)
    return category[0] in "LM" or category == "Nd"


def is_bare_identifier(name: str) -> bool:
    """True if ``name`` can be written without backquotes."""
    return (bool(name) and name not in KEYWORDS and _ident_start(name[0])
            and all(_ident_char(c) for c in name))


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def _scan_string(text: str, i: int) -> tuple[str, int]:
    """Read a string literal whose opening quote is at ``i``; return (value, next index)."""
    out, j = [], i + 1
    while j < len(text):
        c = text[j]
        if c == '"':
            return "".join(out), j + 1
        if c == "\\":
            e = text[j + 1:j + 2]
            if e in _ESCAPES:
                out.append(_ESCAPES[e])
                j += 2
                continue
            if e == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[j + 2:j + 6]):
                code = int(text[j + 2:j + 6], 16)
                if 0xD800 <= code <= 0xDFFF:
                    raise ParseError("\\u escape of a surrogate is not allowed", j + 1)
                out.append(chr(code))
                j += 6
                continue
            raise ParseError('unknown escape in string (use \\" \\\\ \\n \\t \\r or \\uXXXX)',
                             j + 1)
        if unicodedata.category(c) in ("Cc", "Cs"):
            raise ParseError("control character in string (use an escape such as \\n)", j + 1)
        out.append(c)
        j += 1
    raise ParseError("unterminated string", i + 1)


def _scan_backquoted(text: str, i: int) -> tuple[str, int]:
    end = text.find("`", i + 1)
    if end < 0:
        raise ParseError("unterminated backquoted column name", i + 1)
    name = text[i + 1:end]
    try:
        _check_column(name)
    except ValueError as exc:
        raise ParseError(f"invalid backquoted column name: {exc}", i + 1) from None
    return name, end + 1


def _scan_bracket(text: str, i: int) -> int:
    """Index of the ``]`` closing the ``[`` at ``i`` (strings and backquotes skipped)."""
    j = i + 1
    while j < len(text):
        c = text[j]
        if c == "]":
            return j
        if c == "[":
            raise ParseError("'[' inside a predicate", j + 1)
        j = _scan_string(text, j)[1] if c == '"' else (
            _scan_backquoted(text, j)[1] if c == "`" else j + 1)
    raise ParseError("missing ']' for this '['", i + 1)


def tokenize(text: str, *, rule_syntax: bool = False) -> list[Token]:
    """Split ``text`` into tokens; ``rule_syntax`` adds ``.`` and ``[raw predicate]``."""
    tokens: list[Token] = []
    i, n = 0, len(text)
    while i < n:
        c, pos = text[i], i + 1
        if c.isspace():
            i += 1
        elif c == "`":
            name, i = _scan_backquoted(text, i)
            tokens.append(Token("ident", name, pos, i + 1))
        elif _ident_start(c):
            j = i + 1
            while j < n and _ident_char(text[j]):
                j += 1
            word = text[i:j]
            tokens.append(Token("keyword" if word in KEYWORDS else "ident", word, pos, j + 1))
            i = j
        elif c in _DIGITS or (c == "-" and text[i + 1:i + 2] in _DIGITS):
            m = _NUMBER.match(text, i)
            j = m.end()
            if j < n and (_ident_char(text[j]) or text[j] == "."):
                raise ParseError("malformed number", pos)
            if j - i > _MAX_NUMBER_CHARS:
                raise ParseError(f"number longer than {_MAX_NUMBER_CHARS} characters", pos)
            tokens.append(Token("number", Decimal(text[i:j]), pos, j + 1))
            i = j
        elif c == '"':
            value, i = _scan_string(text, i)
            tokens.append(Token("string", value, pos, i + 1))
        elif text.startswith(("==", "!=", "<=", ">="), i):
            tokens.append(Token("op", text[i:i + 2], pos, pos + 2))
            i += 2
        elif c in "<>":
            tokens.append(Token("op", c, pos, pos + 1))
            i += 1
        elif c == "=":
            raise ParseError("'=' is not an operator; use '==' to compare", pos)
        elif c in "(),":
            tokens.append(Token(c, c, pos, pos + 1))
            i += 1
        elif rule_syntax and c == ".":
            tokens.append(Token(".", c, pos, pos + 1))
            i += 1
        elif rule_syntax and c == "[":
            j = _scan_bracket(text, i)
            tokens.append(Token("bracket", text[i + 1:j], pos, pos + 1))
            i = j + 1
        else:
            raise ParseError(f"unexpected character {c!r}", pos)
    tokens.append(Token("end", None, n + 1, n + 1))
    return tokens


