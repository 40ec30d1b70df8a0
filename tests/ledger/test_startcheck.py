"""The check `serve` runs at start: cheap, yet it names what was edited near the tail
and any rewrite the latest signed head no longer covers."""
from __future__ import annotations

import pytest

from node.ledger.startcheck import check_at_start, check_tail

from .helpers import fill
from .test_tamper import altered_entry, ledger, tamper  # noqa: F401 (fixture)


def problems(report):
    assert not report.ok
    return [(p.kind, p.where) for p in report.problems]


def test_an_intact_ledger_passes(ledger, engine):
    assert check_tail(engine, ledger.public_key).ok
    assert check_tail(engine, ledger.public_key, tail=4, align=4).ok
    assert check_at_start(engine, ledger.public_key, "full").ok


def test_altered_entry_in_the_tail_is_named(ledger, engine):
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET entry = :e WHERE idx = 33",
           e=altered_entry(ledger, 33))
    assert problems(check_tail(engine, ledger.public_key)) == [("entry", "entry 33")]


def test_entry_and_leaf_hash_rewritten_together_are_named(ledger, engine):
    from protocols import merkle
    data = altered_entry(ledger, 35)
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET entry = :e, leaf_hash = :h "
           "WHERE idx = 35", e=data, h=merkle.hash_leaf(data))
    found = problems(check_tail(engine, ledger.public_key))
    assert found[0] == ("entry", "entries 34..35")


def test_rewritten_interior_node_breaks_the_signed_head(ledger, engine):
    tamper(engine, "ledger_nodes",
           "UPDATE ledger_nodes SET hash = :h WHERE level = 5 AND node_index = 0", h=b"\x01" * 32)
    found = problems(check_tail(engine, ledger.public_key, tail=4, align=4))
    assert found == [("head", "head 3 (size 37)")]


def test_forged_head_signature_is_named(ledger, engine):
    head = ledger.latest_head()
    forged = bytes([head.signature[0] ^ 1]) + head.signature[1:]
    tamper(engine, "ledger_heads", "UPDATE ledger_heads SET signature = :s WHERE size = 37", s=forged)
    assert problems(check_tail(engine, ledger.public_key))[0][0] == "head_signature"


def test_deleted_last_entry_is_found(ledger, engine):
    tamper(engine, "ledger_entries", "DELETE FROM ledger_entries WHERE idx = 36")
    assert problems(check_tail(engine, ledger.public_key)) == [("state", "ledger_state")]


@pytest.mark.parametrize("mode, found", [("tail", False), ("full", True)])
def test_old_entry_bytes_need_the_full_check(ledger, engine, mode, found):
    fill(ledger, 20)
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET entry = :e WHERE idx = 2",
           e=altered_entry(ledger, 2))
    report = (check_tail(engine, ledger.public_key, tail=8, align=8) if mode == "tail"
              else check_at_start(engine, ledger.public_key, "full"))
    assert report.ok is not found
    if found:
        assert ("entry", "entry 2") in problems(report)
