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
    BigInteger, Column, Engine, Index, Integer, LargeBinary, SmallInteger, String, Table, Text,
    UniqueConstraint, insert, select, text,
)
from sqlalchemy.exc import IntegrityError

from node.storage.schema import _append_only_ddl, metadata, moment, names, required, serial

__all__ = ["ledger_entries", "ledger_nodes", "ledger_heads", "ledger_state",
           "ledger_signing_keys", "ledger_key_certifications", "ledger_partner_keys",
           "ledger_partner_key_rotations", "witness_heads", "witness_cosignatures", "witness_conflicts",
           "witness_resolutions", "witness_certifications",
           "APPEND_ONLY", "install_ledger_triggers"]

# An Ed25519 public key as text ("ed25519:" and hex), and the fields of a signed head.
def _key(name: str = "public_key") -> Column:
    return Column(name, String(80), nullable=False)


def _signed_head() -> list[Column]:
    return required(size=BigInteger, root=LargeBinary(32), time=String(20), signature=LargeBinary(64))


ledger_entries = Table(
    "ledger_entries", metadata,
    # INTEGER on SQLite makes idx the rowid: one b-tree instead of a table and an index.
    Column("idx", BigInteger().with_variant(Integer, "sqlite"), primary_key=True,
           autoincrement=False),
    *required(entry=LargeBinary, leaf_hash=LargeBinary(32)),
    # Copied from the entry for filtering; never trusted for anything signed.
    Column("type", String(16), nullable=False),
    *(Column(name, String(64)) for name in ("query_id", "partner", "dataset", "purpose")),
    Column("outcome", String(16)),
    Column("time", String(20), nullable=False),
    moment(),
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
    "ledger_heads", metadata, serial(), *names("node"), *_signed_head(), moment(),
    Index("ix_ledger_heads_size", "size"),
)

ledger_state = Table(
    "ledger_state", metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),  # always 1
    *required(size=BigInteger, signed_size=BigInteger,
              signed_at=BigInteger),  # unix seconds of the last head
    # A fresh random token per append (and the one before it): lets a process reuse its
    # in-memory tree border only if no other append, and no rollback, happened since.
    *required(tip=BigInteger, prev_tip=BigInteger),
)

ledger_signing_keys = Table(
    "ledger_signing_keys", metadata, serial(),
    *names("node"), Column("generation", Integer, nullable=False), _key(),
    Column("sealed_key", LargeBinary, nullable=False), moment(),
    UniqueConstraint("node", "generation", name="uq_ledger_signing_key"),
)

# Partners' ledger public keys, pinned on first use (receipts, witnessing).
ledger_partner_keys = Table(
    "ledger_partner_keys", metadata, serial(), *names("partner"), _key(), moment("pinned_at"),
    UniqueConstraint("partner", name="uq_ledger_partner_key"),
)

# Heads of partners' ledgers this node fetched and checked (as a witness).
witness_heads = Table(
    "witness_heads", metadata, serial(), *names("partner"), _key(), *_signed_head(),
    moment("seen_at"),
    Index("ix_witness_heads_partner", "partner", "size"),
)

# Cosignatures: issued by this node over partners' heads, and received over its own.
witness_cosignatures = Table(
    "witness_cosignatures", metadata, serial(), *names("log_node", "witness"),
    *required(size=BigInteger,
              cosignature=Text),  # canonical JSON of signing.Cosignature
    moment(),
    Index("ix_witness_cosignatures_log", "log_node", "size"),
)

# Two signed heads of one partner that cannot both be honest: the evidence of a fork.
witness_conflicts = Table(
    "witness_conflicts", metadata, serial(), *names("partner"),
    Column("kind", String(16), nullable=False),  # fork | rollback | inconsistent
    *required(first_head=Text,  # canonical JSON of the earlier head
              second_head=Text, detail=Text),
    moment("detected_at"),
)

# An operator's ruling on a partner's conflicts: the true head, from which witnessing
# resumes; every conflict up to `resolved_through` is closed (the evidence stays).
witness_resolutions = Table(
    "witness_resolutions", metadata, serial(), *names("partner"),
    *required(head=Text,  # canonical JSON of the true head
              head_row=Integer,  # its witness_heads id: the new baseline
              resolved_through=Integer),  # last witness_conflicts id closed
    *names("actor"), moment("resolved_at"),
)

# Certifications of this node's ledger keys in the federation PKI (anchor.py).
ledger_key_certifications = Table(
    "ledger_key_certifications", metadata, serial(), *names("node"), _key(),
    *required(certification=Text,  # JSON of anchor.KeyCertification
              not_after=String(20)),
    moment(),
    Index("ix_ledger_key_certifications_key", "public_key"),
)

# A partner's pin moved to a new key: the partner's certified rotation, followed (anchor.py).
ledger_partner_key_rotations = Table(
    "ledger_partner_key_rotations", metadata, serial(), *names("partner"),
    _key("old_key"), _key("new_key"),
    Column("certification", Text, nullable=False),  # the new key's, naming old_key as previous
    moment("pinned_at"),
    Index("ix_ledger_partner_key_rotations_partner", "partner"),
)

# Witnesses' ledger-key certifications, received with their cosignatures (witness_pki.py).
witness_certifications = Table(
    "witness_certifications", metadata, serial(), *names("witness"), _key(),
    Column("certification", Text, nullable=False),  # JSON of anchor.KeyCertification
    moment(),
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

    Idempotent; meant to run from node.runtime.context.create_schema after metadata.create_all.
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
