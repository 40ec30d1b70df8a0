"""Ledger tables, on the node's shared SQLAlchemy metadata, and their append-only triggers.

* ledger_entries   one row per leaf: contiguous idx from 0, the canonical entry bytes,
                   its RFC 9162 leaf hash, and a few columns copied out of the entry so
                   auditors can filter without decoding every entry (verify_all checks
                   them against the bytes).
* ledger_nodes     every complete perfect subtree above the leaves, (level >= 1, index,
                   hash), as CompactRange.append reports them: any proof is O(log n)
                   primary-key lookups. Level 0 is ledger_entries.leaf_hash (not stored
                   twice: a million-entry ledger would carry a million extra rows).
* ledger_heads     tree heads this node signed.
* ledger_state     one mutable row (size, last signed size and time, a cache token).
                   Appending locks it first, which serialises appenders on SQLite and
                   PostgreSQL alike.
* ledger_signing_keys, ledger_key_certifications, ledger_partner_keys,
  ledger_partner_key_rotations, witness_heads, witness_cosignatures, witness_conflicts,
  witness_resolutions, witness_certifications
                   the node's sealed signing keys (one per generation) and their
                   certifications in the federation PKI; partners' keys pinned on first
                   use (and moved along a partner's certified rotation);
                   partners' heads this node checked,
                   cosignatures (issued and received) and conflicting heads kept as
                   evidence.

Everything but ledger_state refuses UPDATE and DELETE in the database itself
(`install_ledger_triggers`), so a bug or an operator with SQL access cannot quietly
rewrite history; direct tampering that bypasses the triggers is caught by verify_all.
"""
from __future__ import annotations

from sqlalchemy import (
    BigInteger, Column, DateTime, Engine, Index, Integer, LargeBinary, SmallInteger, String,
    Table, Text, UniqueConstraint, insert, select, text,
)
from sqlalchemy.exc import IntegrityError

from node.storage.schema import _append_only_ddl, metadata

__all__ = ["ledger_entries", "ledger_nodes", "ledger_heads", "ledger_state",
           "ledger_signing_keys", "ledger_key_certifications", "ledger_partner_keys",
           "ledger_partner_key_rotations", "witness_heads", "witness_cosignatures", "witness_conflicts",
           "witness_resolutions", "witness_certifications",
           "APPEND_ONLY", "install_ledger_triggers"]

ledger_entries = Table(
    "ledger_entries", metadata,
    # INTEGER on SQLite makes idx the rowid: one b-tree instead of a table and an index.
    Column("idx", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    Column("entry", LargeBinary, nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    # Copied from the entry for filtering; never trusted for anything signed.
    Column("type", String(16), nullable=False),
    Column("query_id", String(64)),
    Column("partner", String(64)),
    Column("dataset", String(64)),
    Column("purpose", String(64)),
    Column("outcome", String(16)),
    Column("time", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Only query_id is indexed: every index is another page written by each durable
    # append; time filters scan (entries are in roughly time order anyway).
    Index("ix_ledger_entries_query", "query_id"),
)

ledger_nodes = Table(
    "ledger_nodes", metadata,
    Column("level", SmallInteger, primary_key=True, autoincrement=False),
    Column("node_index", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)

ledger_heads = Table(
    "ledger_heads", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("time", String(20), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_heads_size", "size"),
)

ledger_state = Table(
    "ledger_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    Column("size", BigInteger, nullable=False),
    Column("signed_size", BigInteger, nullable=False),
    Column("signed_at", BigInteger, nullable=False),  # unix seconds of the last head
    # A fresh random token per append (and the one before it): lets a process reuse its
    # in-memory tree border only if no other append, and no rollback, happened since.
    Column("tip", BigInteger, nullable=False),
    Column("prev_tip", BigInteger, nullable=False),
)

ledger_signing_keys = Table(
    "ledger_signing_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(64), nullable=False),
    Column("generation", Integer, nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("sealed_key", LargeBinary, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("node", "generation", name="uq_ledger_signing_key"),
)

# Partners' ledger public keys, pinned on first use (receipts, witnessing).
ledger_partner_keys = Table(
    "ledger_partner_keys", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("pinned_at", DateTime(timezone=True), nullable=False),
    UniqueConstraint("partner", name="uq_ledger_partner_key"),
)

# Heads of partners' ledgers this node fetched and checked (as a witness).
witness_heads = Table(
    "witness_heads", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("root", LargeBinary(32), nullable=False),
    Column("time", String(20), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Index("ix_witness_heads_partner", "partner", "size"),
)

# Cosignatures: issued by this node over partners' heads, and received over its own.
witness_cosignatures = Table(
    "witness_cosignatures", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("log_node", String(64), nullable=False),
    Column("witness", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("cosignature", Text, nullable=False),  # canonical JSON of signing.Cosignature
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_witness_cosignatures_log", "log_node", "size"),
)

# Two signed heads of one partner that cannot both be honest: the evidence of a fork.
witness_conflicts = Table(
    "witness_conflicts", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("kind", String(16), nullable=False),  # fork | rollback | inconsistent
    Column("first_head", Text, nullable=False),   # canonical JSON of the earlier head
    Column("second_head", Text, nullable=False),
    Column("detail", Text, nullable=False),
    Column("detected_at", DateTime(timezone=True), nullable=False),
)

# An operator's ruling on a partner's conflicts: the true head, from which witnessing
# resumes; every conflict up to `resolved_through` is closed (the evidence stays).
witness_resolutions = Table(
    "witness_resolutions", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("head", Text, nullable=False),          # canonical JSON of the true head
    Column("head_row", Integer, nullable=False),   # its witness_heads id: the new baseline
    Column("resolved_through", Integer, nullable=False),  # last witness_conflicts id closed
    Column("actor", String(64), nullable=False),
    Column("resolved_at", DateTime(timezone=True), nullable=False),
)

# Certifications of this node's ledger keys in the federation PKI (anchor.py).
ledger_key_certifications = Table(
    "ledger_key_certifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("node", String(64), nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("certification", Text, nullable=False),  # JSON of anchor.KeyCertification
    Column("not_after", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_key_certifications_key", "public_key"),
)

# A partner's pin moved to a new key: the partner's certified rotation, followed (anchor.py).
ledger_partner_key_rotations = Table(
    "ledger_partner_key_rotations", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("partner", String(64), nullable=False),
    Column("old_key", String(80), nullable=False),
    Column("new_key", String(80), nullable=False),
    Column("certification", Text, nullable=False),  # the new key's, naming old_key as previous
    Column("pinned_at", DateTime(timezone=True), nullable=False),
    Index("ix_ledger_partner_key_rotations_partner", "partner"),
)

# Witnesses' ledger-key certifications, received with their cosignatures (witness_pki.py).
witness_certifications = Table(
    "witness_certifications", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("witness", String(64), nullable=False),
    Column("public_key", String(80), nullable=False),
    Column("certification", Text, nullable=False),  # JSON of anchor.KeyCertification
    Column("created_at", DateTime(timezone=True), nullable=False),
    Index("ix_witness_certifications_witness", "witness"),
)

APPEND_ONLY = ("ledger_entries", "ledger_nodes", "ledger_heads", "ledger_signing_keys",
               "ledger_partner_keys", "witness_heads", "witness_cosignatures", "witness_conflicts",
               "witness_resolutions", "ledger_key_certifications", "ledger_partner_key_rotations",
               "witness_certifications")
LEDGER_TABLES = (ledger_entries, ledger_nodes, ledger_heads, ledger_state, ledger_signing_keys,
                 ledger_partner_keys, witness_heads, witness_cosignatures, witness_conflicts,
                 witness_resolutions, ledger_key_certifications, ledger_partner_key_rotations,
                 witness_certifications)


def install_ledger_triggers(engine: Engine) -> None:
    """Create the ledger tables if missing, their append-only triggers and the state row.

    Idempotent; meant to run from node.runtime.database.create_schema after metadata.create_all.
    """
    metadata.create_all(engine, tables=list(LEDGER_TABLES))
    with engine.begin() as conn:
        for table in APPEND_ONLY:
            for stmt in _append_only_ddl(engine.dialect.name, table):
                conn.execute(text(stmt))
    with engine.connect() as conn:
        if conn.execute(select(ledger_state.c.id)).first() is not None:
            return
    try:
        with engine.begin() as conn:
            conn.execute(insert(ledger_state).values(id=1, size=0, signed_size=0, signed_at=0, tip=0,
                                                    prev_tip=0))
    except IntegrityError:
        pass  # another process created it first
