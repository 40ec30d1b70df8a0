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

The statements of an append (`AppendStatements`) are compiled once per dialect and run
on the DBAPI cursor. A durable append is bound by the commit's fsync; what remains is
Python. SQLAlchemy's per-execution machinery (cache keys, result objects) costs about as much as SQLite
executing the statement, so the two or three statements every append runs are compiled
once by SQLAlchemy for the connection's dialect (same SQL, same type processing) and
executed on the underlying DBAPI cursor, inside the caller's SQLAlchemy transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger, Column, Connection, Dialect, Engine, Index, Integer, LargeBinary, SmallInteger,
    String, Table, Text, UniqueConstraint, bindparam, insert, select, text,
)
from sqlalchemy.exc import IntegrityError

from node.storage.schema import _append_only_ddl, metadata, moment, names, required, serial

__all__ = ["ledger_entries", "ledger_nodes", "ledger_heads", "ledger_state",
           "ledger_signing_keys", "ledger_key_certifications", "ledger_partner_keys",
           "ledger_partner_key_rotations", "witness_heads", "witness_cosignatures", "witness_conflicts",
           "witness_resolutions", "witness_certifications",
           "APPEND_ONLY", "install_ledger_triggers", "AppendStatements"]

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


# -- the statements of an append -------------------------------------------------------

class _Compiled:
    def __init__(self, stmt: Any, dialect: Dialect, columns: Any = ()) -> None:
        compiled = stmt.compile(dialect=dialect)
        self._compiled = compiled
        self.sql = compiled.string
        self.order = compiled.positiontup if compiled.positional else None
        self.processors: list[tuple[str, Any]] = []
        for column in columns:
            proc = column.type.dialect_impl(dialect).bind_processor(dialect)
            if proc is not None:
                self.processors.append((column.name, proc))

    def params(self, values: dict[str, Any]) -> Any:
        for name, proc in self.processors:
            values[name] = proc(values[name])
        if self.order is None:
            return values
        return tuple(values[name] for name in self.order)

    def defaults(self, values: dict[str, Any]) -> dict[str, Any]:
        """Fill literals SQLAlchemy turned into parameters (e.g. `WHERE id = 1`)."""
        return self._compiled.construct_params(values)


def _insert_all(table: Table, dialect: Dialect, skip: tuple[str, ...] = ()) -> _Compiled:
    columns = [c for c in table.c if c.name not in skip]
    return _Compiled(insert(table).values({c.name: bindparam(c.name) for c in columns}),
                     dialect, columns)


class AppendStatements:
    """lock (UPDATE ... RETURNING), insert entries and nodes, record a head; one dialect."""

    def __init__(self, dialect: Dialect, lock: Any, signed: Any, entries: Table, nodes: Table,
                 heads: Table) -> None:
        self._lock = _Compiled(lock, dialect)
        self._signed = _Compiled(signed, dialect)
        self._entries = _insert_all(entries, dialect)
        self._nodes = _insert_all(nodes, dialect)
        self._heads = _insert_all(heads, dialect, skip=("id",))

    def _run(self, conn: Connection, stmt: _Compiled, values: dict[str, Any]) -> tuple | None:
        cursor = conn.connection.cursor()
        try:
            cursor.execute(stmt.sql, stmt.params(stmt.defaults(values)))
            return cursor.fetchone() if cursor.description else None
        finally:
            cursor.close()

    def lock(self, conn: Connection, **values: Any) -> tuple:
        return self._run(conn, self._lock, values)

    def record_head(self, conn: Connection, head: dict[str, Any], signed_at: int) -> None:
        self._run(conn, self._heads, head)
        self._run(conn, self._signed, {"signed_size": head["size"], "signed_at": signed_at})

    def insert(self, conn: Connection, entries: Sequence[dict], nodes: Sequence[dict]) -> None:
        cursor = conn.connection.cursor()
        try:
            for stmt, rows in ((self._entries, entries), (self._nodes, nodes)):
                if len(rows) == 1:
                    cursor.execute(stmt.sql, stmt.params(rows[0]))
                elif rows:
                    cursor.executemany(stmt.sql, [stmt.params(r) for r in rows])
        finally:
            cursor.close()
