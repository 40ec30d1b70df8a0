"""The node's statistics plumbing in isolation: value parsing, rounds, the private table."""
from __future__ import annotations

import pytest

from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.datasets.statistics_rows import MAX_VALUE, VersionColumns, aggregate_rows, income_rows, parse_int
from node.transport.chunks import RoundError, chunks, collect


@pytest.mark.parametrize("text, value", [("12", 12), (" 7 ", 7), ("-5", -5), ("+3", 3),
                                         ("1,200", None), ("3.5", None), ("", None),
                                         ("１２", None), ("n/a", None), ("1e3", None)])
def test_values_are_plain_ascii_integers(text, value) -> None:
    assert parse_int(text) == value


def test_unusable_rows_are_left_out_and_the_bound_never_comes_from_the_data() -> None:
    cols = VersionColumns([b"a", b"b", b"c", b"d"], {
        "base": ["10", "oops", "-1", "99"], "district": ["x", "y", "x", "y"]})
    rows = aggregate_rows(cols, "base", "district", None)
    assert rows.positions.tolist() == [0, 3] and rows.values.tolist() == [10, 99]
    assert rows.group_names == ("x", "y") and rows.groups.tolist() == [0, 1]
    assert rows.unusable == 2 and rows.value_bound == MAX_VALUE
    declared = aggregate_rows(cols, "base", "", 50)
    assert declared.positions.tolist() == [0] and declared.value_bound == 50
    assert declared.group_names == ("",) and declared.unusable == 3
    count_only = aggregate_rows(cols, "", "", None)
    assert count_only.positions.tolist() == [0, 1, 2, 3] and count_only.unusable == 0
    positions, incomes, unusable = income_rows(cols, "base")
    assert positions.tolist() == [0, 2, 3] and incomes == [10, -1, 99] and unusable == 1


def _round(data: bytes, size: int) -> list:
    return list(chunks(data, size, lambda c: spb.AggregateRequest(masked=c)))


def test_rounds_are_reassembled_and_refused_when_out_of_turn_large_or_cut() -> None:
    data = bytes(range(256)) * 10
    assert collect(iter(_round(data, 100)), "masked", len(data)) == data
    assert collect(iter(_round(b"", 100)), "masked", 0) == b""
    with pytest.raises(RoundError, match="exceeds"):
        collect(iter(_round(data, 100)), "masked", len(data) - 1)
    with pytest.raises(RoundError, match="ended before"):
        collect(iter(_round(data, 100)[:-1]), "masked", len(data))
    with pytest.raises(RoundError, match="expected match_request"):
        collect(iter(_round(data, 100)), "match_request", len(data))
