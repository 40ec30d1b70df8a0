"""Someone edits ledger rows directly in the database (bypassing the triggers).

verify_all names the altered entry, leaf hash, node or head; the auditor, who sees only
what the node serves, names the entry index or tree size where the log breaks.
"""
from __future__ import annotations

import dataclasses

import pytest
import sqlalchemy as sa

from node.ledger import decode, encode
from node.ledger.audit import KnownHeads, verify
from node.ledger.sources import ExportSource, LedgerSource, write_export
from node.ledger.tables import install_ledger_triggers

from .helpers import fill, make_ledger

SIZES = (10, 20, 37)


@pytest.fixture
def ledger(engine):
    ledger = make_ledger(engine)
    done = 0
    for size in SIZES:
        fill(ledger, size - done)
        ledger.sign_head()
        done = size
    assert ledger.verify_all().ok
    return ledger


def tamper(engine, table: str, sql: str, **params) -> None:
    """Run `sql` with the append-only triggers of `table` out of the way, then restore them."""
    with engine.begin() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql(f"DROP TRIGGER {table}_no_update")
            conn.exec_driver_sql(f"DROP TRIGGER {table}_no_delete")
        else:
            conn.exec_driver_sql(f"ALTER TABLE {table} DISABLE TRIGGER ALL")
        conn.execute(sa.text(sql), params)
        if engine.dialect.name != "sqlite":
            conn.exec_driver_sql(f"ALTER TABLE {table} ENABLE TRIGGER ALL")
    install_ledger_triggers(engine)


def altered_entry(ledger, index: int) -> bytes:
    entry = decode(dict(ledger.entries(index, index + 1))[index])
    return encode(dataclasses.replace(entry, elements=entry.elements + 1000))


def only_problem(report):
    assert not report.ok
    assert len(report.problems) == 1, [str(p) for p in report.problems]
    return report.problems[0]


def test_altered_entry_bytes_are_named(ledger, engine, tmp_path):
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET entry = :e WHERE idx = 13",
           e=altered_entry(ledger, 13))
    problem = only_problem(ledger.verify_all())
    assert (problem.kind, problem.where) == ("entry", "entry 13")
    verdict = verify(LedgerSource(ledger), KnownHeads(tmp_path / "auditor"))
    assert [(f.kind, f.where) for f in verdict.findings] == [("entries", "entry 13")]
    with open(tmp_path / "export.jsonl", "wb") as out:
        write_export(ledger, out, ledger.latest_head())
    verdict = verify(ExportSource(tmp_path / "export.jsonl"), KnownHeads(tmp_path / "offline"))
    assert [(f.kind, f.where) for f in verdict.findings] == [("entries", "entry 13")]


def test_altered_leaf_hash_is_named(ledger, engine, tmp_path):
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET leaf_hash = :h WHERE idx = 13",
           h=b"\x00" * 32)
    problem = only_problem(ledger.verify_all())
    assert (problem.kind, problem.where) == ("leaf_hash", "entry 13")
    # The auditor hashes the bytes itself, so only proofs built on the stored hash fail:
    # entry 12's audit path holds entry 13's leaf hash.
    verdict = verify(LedgerSource(ledger), KnownHeads(tmp_path / "auditor"), start=8, end=16)
    assert [(f.kind, f.where) for f in verdict.findings] == [("inclusion", "entry 12")]


def test_altered_interior_node_is_named(ledger, engine, tmp_path):
    tamper(engine, "ledger_nodes",
           "UPDATE ledger_nodes SET hash = :h WHERE level = 2 AND node_index = 1", h=b"\x01" * 32)
    problem = only_problem(ledger.verify_all())
    assert (problem.kind, problem.where) == ("node", "node (level 2, index 1)")
    verdict = verify(LedgerSource(ledger), KnownHeads(tmp_path / "auditor"), start=0, end=8)
    assert {f.where for f in verdict.findings} == {f"entry {i}" for i in (0, 1, 2, 3)}


def test_altered_head_root_is_named(ledger, engine, tmp_path):
    tamper(engine, "ledger_heads", "UPDATE ledger_heads SET root = :r WHERE size = 20",
           r=b"\x02" * 32)
    problem = only_problem(ledger.verify_all())
    assert problem.kind == "head" and problem.where.endswith("(size 20)")
    assert "root was altered" in problem.detail
    tamper(engine, "ledger_heads", "UPDATE ledger_heads SET root = :r WHERE size = 37",
           r=b"\x02" * 32)
    verdict = verify(LedgerSource(ledger), KnownHeads(tmp_path / "auditor"))
    assert [(f.kind, f.where) for f in verdict.findings] == [("head_signature", "tree size 37")]


def test_altered_head_signature_is_named(ledger, engine):
    head = ledger.heads()[0]
    forged = bytes([head.signature[0] ^ 1]) + head.signature[1:]
    tamper(engine, "ledger_heads", "UPDATE ledger_heads SET signature = :s WHERE size = 10",
           s=forged)
    problem = only_problem(ledger.verify_all())
    assert (problem.kind, problem.where.split(" (")[1]) == ("head_signature", "size 10)")


def test_deleted_entry_and_rewritten_history_are_found(ledger, engine):
    tamper(engine, "ledger_entries", "DELETE FROM ledger_entries WHERE idx = 30")
    report = ledger.verify_all()
    assert any(p.kind == "missing" and p.where == "entry 30" for p in report.problems)


def test_a_consistent_rewrite_still_breaks_the_signed_heads(ledger, engine):
    """Entry, leaf hash and every node above rewritten: only the signatures remain."""
    from protocols import merkle
    data = altered_entry(ledger, 3)
    leaves = [merkle.hash_leaf(b) for _, b in ledger.entries()]
    leaves[3] = merkle.hash_leaf(data)
    tamper(engine, "ledger_entries", "UPDATE ledger_entries SET entry = :e, leaf_hash = :h "
           "WHERE idx = 3", e=data, h=leaves[3])
    compact = merkle.CompactRange()
    for leaf in leaves:
        for node in compact.append(leaf)[1:]:
            tamper(engine, "ledger_nodes", "UPDATE ledger_nodes SET hash = :h "
                   "WHERE level = :l AND node_index = :i", h=node.hash, l=node.level, i=node.index)
    report = ledger.verify_all()
    assert {p.where for p in report.problems} == {f"head {i} (size {s})"
                                                  for i, s in zip((1, 2, 3), SIZES)}
    assert all("history was rewritten" in p.detail for p in report.problems)
