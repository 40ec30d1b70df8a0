"""The stored ledger on SQLite and PostgreSQL: appends, proofs, heads, concurrency, triggers."""
from __future__ import annotations

import tempfile
import threading
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.ledger import EntryFilter, HeadPolicy, Ledger, LedgerError, decode
from node.ledger.signing import load_or_create_signer
from node.ledger.tables import APPEND_ONLY, ledger_partner_key_rotations
from node.ledger.witness import Witness
from node.keys.secrets import KeyEncryptionKey
from protocols import merkle

from .helpers import certified, fill, make_ledger, open_engine, query


def leaf_hashes(ledger: Ledger) -> list[bytes]:
    return [merkle.hash_leaf(data) for _, data in ledger.entries()]


def test_appended_entries_prove_with_protocols_merkle(engine):
    ledger = make_ledger(engine)
    sizes = []
    for batch in (1, 2, 5, 1, 9, 3):  # single appends and batches, crossing subtree borders
        fill(ledger, batch)
        sizes.append(ledger.size())
    leaves = leaf_hashes(ledger)
    n = len(leaves)
    assert n == sizes[-1] == 21
    head = ledger.sign_head()
    head.verify(ledger.public_key)
    assert (head.size, head.root) == (n, merkle.root(leaves))
    for size in range(1, n + 1):
        root = merkle.root(leaves[:size])
        assert ledger.root(size) == root
        for index in range(size):
            merkle.verify_inclusion(leaves[index], index, size,
                                    ledger.inclusion_proof(index, size), root)
        for first in range(1, size + 1):
            merkle.verify_consistency(first, size, merkle.root(leaves[:first]), root,
                                      ledger.consistency_proof(first, size))
    with pytest.raises(LedgerError):
        ledger.inclusion_proof(0, n + 1)
    with pytest.raises(merkle.ProofShapeError):
        ledger.consistency_proof(0, n)


def test_entry_commits_and_rolls_back_with_the_callers_transaction(engine):
    ledger = make_ledger(engine)
    fill(ledger, 3)
    with pytest.raises(RuntimeError):
        with engine.begin() as conn:
            ledger.append(conn, query())
            raise RuntimeError("the query's own work failed")
    assert ledger.size() == 3
    other = make_ledger(engine)  # another process: its own in-memory state
    other.signer = ledger.signer
    fill(other, 2)
    fill(ledger, 2)  # must not reuse a border from before the other process appended
    assert ledger.size() == 7
    assert ledger.sign_head().root == merkle.root(leaf_hashes(ledger))
    assert ledger.verify_all().ok


def test_append_refuses_entries_about_another_node(engine):
    ledger = make_ledger(engine, "hrss")
    with engine.begin() as conn, pytest.raises(LedgerError, match="must name this node"):
        ledger.append(conn, query("fund"))


def test_heads_follow_the_policy_and_are_append_only(engine):
    ledger = make_ledger(engine, policy=HeadPolicy(every_entries=4))
    for _ in range(10):
        fill(ledger, 1)
    heads = ledger.heads()
    assert [h.size for h in heads] == [4, 8]
    assert ledger.sign_head().size == 10
    assert ledger.sign_head() == ledger.latest_head()  # nothing new: no new head
    assert len(ledger.heads()) == 3
    every = make_ledger(engine, policy=HeadPolicy(every_entries=1))
    every.signer = ledger.signer
    fill(every, 1)
    assert ledger.latest_head().size == 11
    timed = make_ledger(engine, policy=HeadPolicy(every_seconds=60))
    timed.signer = ledger.signer
    fill(timed, 1)  # the last head is from "now" on the fixed clock: not due
    assert ledger.latest_head().size == 11
    timed._clock.now = timed._clock.now.replace(minute=5)
    fill(timed, 1)
    assert ledger.latest_head().size == 13


def populate_every_table(engine, tmp_path) -> Ledger:
    """A ledger whose every append-only table holds rows, through the real API."""
    kek = KeyEncryptionKey.create(tmp_path / "node.kek")
    ledger = make_ledger(engine)
    ledger.signer = load_or_create_signer(engine, kek, "hrss")
    fill(ledger, 4)
    ledger.sign_head()
    partner = make_ledger(engine, "fund")  # only its signer is used
    witness = Witness(ledger)
    first = partner.signer.sign_head(2, b"\x01" * 32, "2025-03-01T08:00:00Z")
    assert witness.observe("fund", partner.public_key, first).verdict == "cosigned"
    forked = partner.signer.sign_head(2, b"\x02" * 32, "2025-03-01T08:00:05Z")
    assert witness.observe("fund", partner.public_key, forked).verdict == "fork"
    witness.resolve("fund", b"\x02" * 32, "operator")
    certified(ledger, tmp_path / "pki")
    with engine.begin() as conn:  # a partner's pin moved along its rotation
        conn.execute(sa.insert(ledger_partner_key_rotations).values(
            partner="fund", old_key=partner.public_key.text, new_key=ledger.public_key.text,
            certification="{}", pinned_at=datetime.now(timezone.utc)))
    from node.ledger.witness_pki import keep_certification
    assert keep_certification(engine, "fund", partner.public_key,  # a witness's, kept with its cosignatures
                              certified(partner, tmp_path / "pki"))
    return ledger


def test_database_refuses_update_and_delete(engine, tmp_path):
    ledger = populate_every_table(engine, tmp_path)
    column = {"ledger_entries": "type", "ledger_nodes": "hash", "ledger_heads": "time",
              "ledger_signing_keys": "public_key", "ledger_partner_keys": "public_key",
              "witness_heads": "time",
              "witness_cosignatures": "cosignature", "witness_conflicts": "detail",
              "witness_resolutions": "actor",
              "ledger_key_certifications": "certification",
              "ledger_partner_key_rotations": "new_key",
              "witness_certifications": "certification"}
    assert set(column) == set(APPEND_ONLY)
    for table, col in column.items():
        with engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar() > 0, table
        for stmt in (f"UPDATE {table} SET {col} = {col}", f"DELETE FROM {table}"):
            with pytest.raises(sa.exc.DBAPIError, match="append-only"):
                with engine.begin() as conn:
                    conn.execute(sa.text(stmt))
    assert ledger.verify_all().ok


def test_concurrent_appends_from_eight_threads_stay_contiguous(engine):
    ledger = make_ledger(engine)
    per_thread, threads = 25, 8
    errors: list[BaseException] = []
    start = threading.Barrier(threads)

    def worker(k: int) -> None:
        own = Ledger(engine, ledger.signer, clock=ledger._clock)  # as if another process
        try:
            start.wait()
            for i in range(per_thread):
                with engine.begin() as conn:
                    own.append(conn, query(n=1000 * k + i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    pool = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert not errors
    indices = [i for i, _ in ledger.entries()]
    assert indices == list(range(threads * per_thread))
    elements = sorted(decode(d).elements for _, d in ledger.entries())
    assert elements == sorted(1000 * k + i for k in range(threads) for i in range(per_thread))
    assert ledger.sign_head().root == merkle.root(leaf_hashes(ledger))
    assert ledger.verify_all().ok


def test_filters_select_entries(engine):
    ledger = make_ledger(engine)
    fill(ledger, 3)
    fill(ledger, 2, outcome="refused", partner="bureau")
    refused = list(ledger.entries(where=EntryFilter(outcome="refused")))
    assert [i for i, _ in refused] == [3, 4]
    assert len(list(ledger.entries(where=EntryFilter(partner="fund")))) == 3
    assert len(list(ledger.entries(where=EntryFilter(since="2025-03-01T08:00:00Z",
                                                     until="2025-03-01T08:00:00Z")))) == 5
    assert list(ledger.entries(where=EntryFilter(since="2025-03-02T00:00:00Z"))) == []
    assert ledger.verify_all(check_columns=True).ok


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(st.integers(1, 40), min_size=1, max_size=12), data=st.data())
def test_stored_tree_matches_a_recomputed_one_for_any_batching(batches, data):
    with tempfile.TemporaryDirectory() as tmp:
        engine = open_engine(f"sqlite:///{tmp}/node.db")
        ledger = make_ledger(engine)
        two = Ledger(engine, ledger.signer)  # alternate appenders: the border cache must hold
        for k, batch in enumerate(batches):
            fill(ledger if k % 2 else two, batch)
        leaves = leaf_hashes(ledger)
        n = len(leaves)
        for size in {n, *data.draw(st.lists(st.integers(1, n), max_size=5))}:
            root = merkle.root(leaves[:size])
            assert ledger.root(size) == root
            index = data.draw(st.integers(0, size - 1))
            merkle.verify_inclusion(leaves[index], index, size,
                                    ledger.inclusion_proof(index, size), root)
            first = data.draw(st.integers(1, size))
            merkle.verify_consistency(first, size, merkle.root(leaves[:first]), root,
                                      ledger.consistency_proof(first, size))
        assert ledger.verify_all().ok
        engine.dispose()
