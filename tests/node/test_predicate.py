"""node.language.predicate: parsing, limits, injection attempts, allow-list, canonical form, evaluation."""

from __future__ import annotations

import unicodedata
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from node.language import predicate as p
from node.language.predicate import And, Comparison, In, Not, Or, ParseError, PredicateNotAllowed


def cmp(column, op, value):
    return Comparison(column, op, value)


A, B, C = cmp("a", "==", 1), cmp("b", "==", 1), cmp("c", "==", 1)


# --- parsing ---------------------------------------------------------------------------

@pytest.mark.parametrize("text, expected", [
    ("a == 1 or b == 1 and c == 1", Or((A, And((B, C))))),
    ("(a == 1 or b == 1) and c == 1", And((Or((A, B)), C))),
    ("not a == 1 and b == 1", And((B, Not(A)))),
    ("not (a == 1 and b == 1)", Not(And((A, B)))),
    ("not not a == 1", A),
    ("not not not a == 1", Not(A)),
    ("a == 1 and (b == 1 and c == 1)", And((A, B, C))),
    ("c == 1 or b == 1 or a == 1 or a == 1", Or((A, B, C))),
    ("((a == 1))", A),
])
def test_precedence_and_normal_form(text, expected):
    assert p.parse(text) == expected


def test_examples_from_the_brief():
    assert p.parse('contribution_months >= 6 and status == "active"') == And((
        cmp("contribution_months", ">=", 6), cmp("status", "==", "active")))
    assert p.parse("graduation_year in (2024, 2025, 2026)") == In(
        "graduation_year", (2024, 2025, 2026))
    assert p.parse('not (degree == "专科")') == Not(cmp("degree", "==", "专科"))
    assert p.parse("缴费月数 >= 6") == cmp("缴费月数", ">=", 6)


@pytest.mark.parametrize("text, column", [
    ("缴费月数 >= 6", "缴费月数"),
    ("参保状态_2024 == 1", "参保状态_2024"),
    ("_private == 1", "_private"),
    ("`social insurance status` == 1", "social insurance status"),
    ("`and` == 1", "and"),
    ("`年龄（岁）` < 35", "年龄（岁）"),
    ("Straße == 1", "Straße"),
])
def test_column_names(text, column):
    assert p.parse(text).column == column


@pytest.mark.parametrize("source, value", [
    (r'"plain"', "plain"),
    (r'"say \"hi\""', 'say "hi"'),
    (r'"back\\slash"', "back\\slash"),
    (r'"a\nb\tc\rd"', "a\nb\tc\rd"),
    (r'"\u4e13\u79d1"', "专科"),
    (r'"专科"', "专科"),
    (r'""', ""),
    ('"single \'quotes\' are text"', "single 'quotes' are text"),
    (r'"a or b == 1) and (x"', "a or b == 1) and (x"),
])
def test_string_literals(source, value):
    assert p.parse(f"s == {source}").value == value


@pytest.mark.parametrize("source, value", [
    ("6", Decimal(6)), ("-6", Decimal(-6)), ("006", Decimal(6)), ("6.50", Decimal("6.5")),
    ("-0.25", Decimal("-0.25")), ("12345678901234567890123456789012345", Decimal(
        "12345678901234567890123456789012345")),
])
def test_number_literals(source, value):
    node = p.parse(f"x >= {source}")
    assert node.value == value and isinstance(node.value, Decimal)


def test_in_lists():
    assert p.parse("y in (2025, 2024, 2024.0,)") == In("y", (Decimal(2024), Decimal(2025)))
    assert p.parse('d in ("本科", 3, "专科")').values == (Decimal(3), "专科", "本科")
    assert p.parse("y in (1)") == In("y", (1,))


@pytest.mark.parametrize("text, position, fragment", [
    ("__import__('os')", 12, "unexpected character"),
    ("a == b; drop", 7, "unexpected character ';'"),  # the whole text is tokenised first
    ("a == b", 6, "expected a number or a double-quoted string"),
    ("a == 1; drop table x", 7, "unexpected character ';'"),
    ("a = 1", 3, "use '=='"),
    ("a === 1", 5, "'=' is not an operator"),
    ("a == 1 AND b == 2", 8, "keywords are lowercase"),
    ("a == 1 b == 2", 8, "expected 'and', 'or' or the end"),
    ("(a == 1", 8, "close the '(' at column 1"),
    ("a == 1)", 7, "expected 'and', 'or' or the end"),
    ("a in ()", 7, "expected a number"),
    ("a in 1, 2", 6, "'(' after 'in'"),
    ("a in (1 2)", 9, "',' or ')'"),
    ("a == 1.", 6, "malformed number"),
    ("a == 1.2.3", 6, "malformed number"),
    ("a == 6abc", 6, "malformed number"),
    ("a == 1e3", 6, "malformed number"),
    ("a == +1", 6, "unexpected character '+'"),
    ("a == 'x'", 6, "unexpected character"),
    ('a == "x', 6, "unterminated string"),
    ('a == "x\\q"', 8, "unknown escape"),
    ('a == "\\ud800"', 7, "surrogate"),
    ('a == "line\nbreak"', 11, "control character"),
    ("`a", 1, "unterminated backquoted"),
    ("`` == 1", 1, "invalid backquoted column name"),
    ("and == 1", 1, "backquotes"),
    ("not", 4, "expected a column name"),
    ("", 1, "expected a column name"),
    ("a ==", 5, "expected a number"),
    ("a", 2, "expected a comparison operator"),
    ("1 == a", 1, "expected a column name"),
    ("a == 1 and", 11, "expected a column name"),
    ("a.b == 1", 2, "unexpected character '.'"),
    ("a[0] == 1", 2, "unexpected character '['"),
    ("eval(a) == 1", 5, "expected a comparison operator"),
    ("a == 1 or 1 == 1", 11, "expected a column name"),
    ("a == True", 6, "expected a number"),
    ("a == 1 -- comment", 8, "unexpected character '-'"),
    ("a == 1 # comment", 8, "unexpected character '#'"),
    ("a == ${x}", 6, "unexpected character '$'"),
    ("a == 1 ; b == 2", 8, "unexpected character ';'"),
])
def test_errors_with_positions(text, position, fragment):
    with pytest.raises(ParseError) as err:
        p.parse(text)
    assert err.value.position == position, str(err.value)
    assert fragment in err.value.message
    assert f"(at column {position})" in str(err.value)


def test_non_string_input_is_a_type_error():
    with pytest.raises(TypeError):
        p.parse(b"a == 1")


# --- limits ----------------------------------------------------------------------------

def test_length_limit():
    ok = "a == " + '"' + "x" * (p.MAX_LENGTH - 7) + '"'
    assert len(ok) == p.MAX_LENGTH
    p.parse(ok)
    with pytest.raises(ParseError) as err:
        p.parse(ok + " ")
    assert err.value.position == p.MAX_LENGTH + 1


def test_depth_limit():
    ok = "(" * p.MAX_DEPTH + "a == 1" + ")" * p.MAX_DEPTH
    assert p.parse(ok) == A
    deep = "(" * (p.MAX_DEPTH + 1) + "a == 1" + ")" * (p.MAX_DEPTH + 1)
    with pytest.raises(ParseError) as err:
        p.parse(deep)
    assert err.value.position == p.MAX_DEPTH + 1 and "deeper than 16" in err.value.message
    with pytest.raises(ParseError):
        p.parse("not " * (p.MAX_DEPTH + 1) + "a == 1")
    with pytest.raises(ParseError):  # long chains never reach the recursion limit
        p.parse("not " * 240 + "a == 1")
    with pytest.raises(ParseError):
        p.parse("(" * 499 + ")" * 499)


def test_deepest_predicate_round_trips_through_its_canonical_text():
    text = "a == 0"
    for i in range(1, p.MAX_DEPTH // 3 + 1):  # three levels each: not, (, (
        text = f"not (b{i} == {i} or c{i} == {i} and ({text}))"
    text = "(" * (p.MAX_DEPTH % 3) + text + ")" * (p.MAX_DEPTH % 3)
    node = p.parse(text)
    with pytest.raises(ParseError):
        p.parse(f"({text})")
    assert p.parse(p.to_canonical(node)) == node


def test_node_limit():
    p.parse(" or ".join(f"a{i} == 1" for i in range(p.MAX_NODES - 1)))  # 63 + one 'or'
    with pytest.raises(ParseError) as err:
        p.parse(" or ".join(f"a{i} == 1" for i in range(p.MAX_NODES)))
    assert f"more than {p.MAX_NODES} nodes" in err.value.message
    p.parse("y in (" + ", ".join(map(str, range(p.MAX_NODES - 1))) + ")")
    with pytest.raises(ParseError):
        p.parse("y in (" + ", ".join(map(str, range(p.MAX_NODES))) + ")")


@given(st.text(max_size=60))
@settings(max_examples=400)
def test_arbitrary_text_only_ever_raises_parse_error(text):
    try:
        node = p.parse(text)
    except ParseError as exc:
        assert 1 <= exc.position <= len(text) + 1
    else:
        assert p.parse(p.to_canonical(node)) == node


# --- canonical form --------------------------------------------------------------------

@pytest.mark.parametrize("one, other", [
    ('contribution_months>=6 and status=="active"',
     '  status == "active"  and  contribution_months >= 6.0 '),
    ("a == 1 and (b == 1 and c == 1)", "(c == 1 and b == 1) and a == 1 and a == 1"),
    ("y in (2024, 2025, 2026)", "y in (2026, 2025, 2024, 2025.00,)"),
    ("not (degree == \"专科\")", "not degree == \"\\u4e13\\u79d1\""),
    ("`x` == 1", "x == 1"),
    ("a == 007", "a == 7"),
    ("a == -0", "a == 0.000"),
    ("not not (a == 1 or b == 1)", "(b == 1) or (((a == 1)))"),
])
def test_equivalent_spellings_have_one_canonical_text(one, other):
    assert p.parse(one) == p.parse(other)
    assert p.to_canonical(p.parse(one)) == p.to_canonical(p.parse(other))


@pytest.mark.parametrize("text, canonical", [
    ('contribution_months >= 6 and status == "active"',
     'contribution_months >= 6 and status == "active"'),
    ("graduation_year in (2026,2024,2025)", "graduation_year in (2024, 2025, 2026)"),
    ('not (degree == "专科")', 'not degree == "专科"'),
    ("(a == 1 or b == 2) and c == 3", "(a == 1 or b == 2) and c == 3"),
    ("not (a == 1 or b == 2)", "not (a == 1 or b == 2)"),
    ('`social insurance` != "停保"', '`social insurance` != "停保"'),
    ('`and` == "a\\"b\\\\c\\n\\u0001"', '`and` == "a\\"b\\\\c\\n\\u0001"'),
    ("x > 1.500", "x > 1.5"),
    ("x > 1500", "x > 1500"),
])
def test_canonical_text(text, canonical):
    assert p.to_canonical(p.parse(text)) == canonical


def test_ast_is_immutable_and_hashable():
    node = p.parse("a == 1 and b in (1, 2)")
    with pytest.raises(AttributeError):
        node.operands = ()
    assert {node: 1}[p.parse("b in (2, 1) and a == 1.0")] == 1


@pytest.mark.parametrize("build", [
    lambda: Comparison("", "==", 1),
    lambda: Comparison("a`b", "==", 1),
    lambda: Comparison(" a", "==", 1),
    lambda: Comparison("a", "=", 1),
    lambda: Comparison("a", "==", True),
    lambda: Comparison("a", "==", 1.5),
    lambda: Comparison("a", "==", Decimal("NaN")),
    lambda: In("a", ()),
    lambda: And((A,)),
    lambda: Or(()),
])
def test_ast_constructors_validate(build):
    with pytest.raises(ValueError):
        build()


# --- policy allow-list -----------------------------------------------------------------

POLICY_COLUMNS = {"contribution_months", "status"}


def test_allowed_predicate_passes():
    p.check_allowed(p.parse('contribution_months >= 6 and status == "active"'), POLICY_COLUMNS)
    p.check_allowed(p.parse("contribution_months >= 6"), POLICY_COLUMNS, {">=", "<="})


def test_column_outside_the_allow_list_is_named():
    with pytest.raises(PredicateNotAllowed) as err:
        p.check_allowed(p.parse('contribution_months >= 6 and 姓名 == "张三"'), POLICY_COLUMNS)
    assert err.value.column == "姓名" and err.value.operator is None
    assert "'姓名'" in str(err.value)


@pytest.mark.parametrize("text, op", [
    ("contribution_months != 6", "!="),
    ("status in (\"a\", \"b\")", "in"),
    ("not contribution_months >= 6", "not"),
    ("contribution_months >= 6 or status == \"x\"", "or"),
])
def test_operator_outside_the_allow_list_is_named(text, op):
    allowed = {"==", ">=", "and"}
    with pytest.raises(PredicateNotAllowed) as err:
        p.check_allowed(p.parse(text), POLICY_COLUMNS, allowed)
    assert err.value.operator == op and repr(op) in str(err.value)


def test_policy_typo_in_operator_names_is_refused():
    with pytest.raises(ValueError, match="'gte'"):
        p.check_allowed(p.parse("status == 1"), POLICY_COLUMNS, {"gte"})


def test_columns_and_operators():
    node = p.parse('not (a >= 1 or b in (1, 2)) and c == "x"')
    assert p.columns(node) == {"a", "b", "c"}
    assert p.operators(node) == {"not", "or", "and", ">=", "in", "=="}


# --- evaluation ------------------------------------------------------------------------

def run(text, row):
    return p.compile_predicate(p.parse(text))(row)


@pytest.mark.parametrize("text, row, expected", [
    ("m >= 6", {"m": "6"}, True),
    ("m >= 6", {"m": "5"}, False),
    ("m >= 6", {"m": " 12 "}, True),
    ("m >= 6", {"m": "６"}, True),  # full-width digits, as spreadsheets sometimes hold
    ("m >= 6", {"m": "6.0"}, True),
    ("m == 6", {"m": "06"}, True),
    ("m > 0.1", {"m": "0.10000000000000000001"}, True),  # exact, not float
    ("m >= 6", {"m": "six"}, False),
    ("m >= 6", {"m": ""}, False),
    ("m >= 6", {"m": "1e3"}, False),
    ("m >= 6", {"m": "NaN"}, False),
    ("m >= 6", {"m": "Infinity"}, False),
    ("m >= 6", {"m": "1_000"}, False),
    ("m >= 6", {}, False),
    ("m != 6", {"m": "abc"}, False),  # unknown, not "different"
    ("not m == 6", {"m": "abc"}, False),  # not unknown = unknown
    ("not m == 6", {}, False),
    ("not m == 6", {"m": "7"}, True),
    ("m == 6 or s == \"active\"", {"m": "x", "s": "active"}, True),  # true or unknown
    ("m == 6 and s == \"active\"", {"m": "x", "s": "inactive"}, False),
    ("not (m == 6 and s == \"active\")", {"m": "x", "s": "inactive"}, True),  # not false
    ("not (m == 6 and s == \"active\")", {"m": "x", "s": "active"}, False),  # not unknown
    ('s == "active"', {"s": "active"}, True),
    ('s == "active"', {"s": "Active"}, False),
    ('s == "6"', {"s": "6.0"}, False),  # strings compare exactly
    ('d >= "2024-06-01"', {"d": "2024-07-15"}, True),  # code-point order
    ('s != "x"', {}, False),
    ("y in (2024, 2025)", {"y": "2025"}, True),
    ("y in (2024, 2025)", {"y": "2023"}, False),
    ("y in (2024, 2025)", {"y": "n/a"}, False),
    ("not y in (2024, 2025)", {"y": "n/a"}, False),
    ('y in (2024, "unknown")', {"y": "unknown"}, True),
    ('not y in (2024, "unknown")', {"y": "n/a"}, False),  # unknown for the number part
    ('not d in ("专科", "本科")', {"d": "硕士"}, True),
    ("缴费月数 >= 6", {"缴费月数": "7"}, True),
])
def test_evaluation(text, row, expected):
    assert run(text, row) is expected


@pytest.mark.parametrize("cell", [None, b"6", 6, 6.5, ["6"], {"x": 1}, True, Decimal("NaN")])
def test_odd_cell_values_never_raise(cell):
    for text in ("m >= 6", 'm == "6"', 'm in (6, "6")', "not m != 6"):
        assert run(text, {"m": cell}) in (True, False)


def test_int_cells_compare_as_numbers():
    assert run("m >= 6", {"m": 7}) is True
    assert run("m >= 6", {"m": True}) is False


def test_three_valued_condition():
    cond = p.compile_condition(p.parse("m >= 6"))
    assert (cond({"m": "7"}), cond({"m": "5"}), cond({"m": "x"})) == (True, False, None)


# --- property: the canonical text means the same thing ---------------------------------

COLUMNS = ["a", "b", "年龄", "缴费月数", "and", "x y", "_c1"]
NUMBERS = st.one_of(st.integers(-3, 8).map(Decimal),
                    st.sampled_from([Decimal("6.0"), Decimal("-0.5"), Decimal("2024"),
                                     Decimal("1E+1"), Decimal("0.000")]))
STRINGS = st.one_of(st.sampled_from(["active", "专科", '"', "\\", "a\nb", "6", ""]),
                    st.text(max_size=4))
LITERALS = st.one_of(NUMBERS, STRINGS)
LEAVES = st.one_of(
    st.builds(Comparison, st.sampled_from(COLUMNS), st.sampled_from(p.COMPARISON_OPS),
              LITERALS),
    st.builds(In, st.sampled_from(COLUMNS), st.lists(LITERALS, min_size=1, max_size=4)
              .map(tuple)))
TREES = st.recursive(LEAVES, lambda kids: st.one_of(
    kids.map(Not),
    st.lists(kids, min_size=2, max_size=3).map(lambda xs: And(tuple(xs))),
    st.lists(kids, min_size=2, max_size=3).map(lambda xs: Or(tuple(xs)))), max_leaves=8)
CELLS = st.one_of(
    st.sampled_from(["0", "1", "-1", "6", "6.0", " 7 ", "2024", "-0.5", "active", "专科",
                     "", "x", "1e3", "NaN", "６", '"', "\\", "a\nb"]),
    st.integers(-3, 8).map(str), st.text(max_size=3))
ROWS = st.dictionaries(st.sampled_from(COLUMNS), CELLS)


@given(TREES, st.lists(ROWS, min_size=1, max_size=5))
@settings(max_examples=500, deadline=None)
def test_canonical_round_trip_preserves_meaning(tree, rows):
    text = p.to_canonical(tree)
    reparsed = p.parse(text)
    assert reparsed == p.normalize(tree)
    assert p.to_canonical(reparsed) == text
    original, again = p.compile_condition(tree), p.compile_condition(reparsed)
    selects, selects_again = p.compile_predicate(tree), p.compile_predicate(reparsed)
    for row in rows:
        assert again(row) == original(row)
        assert selects_again(row) == selects(row)


@given(TREES, ROWS)
@settings(max_examples=300, deadline=None)
def test_evaluation_matches_a_naive_kleene_reading(tree, row):
    def ref(node):
        if isinstance(node, Not):
            v = ref(node.operand)
            return None if v is None else not v
        if isinstance(node, (And, Or)):
            vals = [ref(c) for c in node.operands]
            decisive = isinstance(node, Or)
            if decisive in vals:
                return decisive
            return None if None in vals else not decisive
        if isinstance(node, In):
            vals = [ref(Comparison(node.column, "==", v)) for v in node.values]
            return True if True in vals else (None if None in vals else False)
        cell = row.get(node.column)
        if isinstance(node.value, str):
            if cell is None:
                return None
            left, right = cell, node.value
        else:
            try:
                text = unicodedata.normalize("NFKC", cell).strip() if cell is not None else ""
                if not text or any(c not in "0123456789.-+" for c in text) or text.count(".") > 1 \
                        or text.endswith(".") or text.startswith(".") or "-" in text[1:] \
                        or "+" in text[1:] or text[0] in "+-" and text[1:2] in (".", ""):
                    return None
                left, right = Decimal(text), node.value
            except ArithmeticError:
                return None
        return {"==": left == right, "!=": left != right, "<": left < right,
                "<=": left <= right, ">": left > right, ">=": left >= right}[node.op]

    assert p.compile_condition(tree)(row) == ref(tree)


def test_errors_survive_pickling_to_and_from_worker_processes():
    import pickle

    err = pickle.loads(pickle.dumps(ParseError("bad", 3)))
    assert (err.message, err.position, str(err)) == ("bad", 3, "bad (at column 3)")
    refused = pickle.loads(pickle.dumps(PredicateNotAllowed("no", column="姓名")))
    assert (refused.column, refused.operator, str(refused)) == ("姓名", None, "no")
