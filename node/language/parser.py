"""Parsing predicate text (tokens from tokens.py) into the normalised syntax tree; see predicate.py for the grammar."""
from __future__ import annotations

from collections.abc import Callable
from decimal import Decimal

from node.language.tokens import KEYWORDS, ParseError, Token, tokenize
from node.language.syntax import MAX_DEPTH, MAX_LENGTH, MAX_NODES, And, Comparison, In, Not, Or, Predicate
from node.language.render import format_literal, normalize

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

    ``node.rules.language`` extends it by overriding ``term`` (what an operand is). The parser
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
