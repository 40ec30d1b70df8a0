"""The node's database opened for use: every table of every layer created, append-only triggers installed.

The schema of each layer lives with it (node/storage/schema.py, node/ledger/tables.py); creating it
needs both, so it happens here, above them.
"""
from __future__ import annotations

from sqlalchemy import Engine, text

from node.ledger.tables import install_ledger_triggers
from node.storage.schema import _APPEND_ONLY, _append_only_ddl, make_engine, metadata


def create_schema(engine: Engine) -> None:
    """Create missing tables and the append-only triggers (idempotent)."""
    metadata.create_all(engine)  # missing tables, with their indexes
    for table in metadata.sorted_tables:  # and indexes added since a table was created
        for index in table.indexes:
            index.create(engine, checkfirst=True)
    with engine.begin() as conn:
        for table in _APPEND_ONLY:
            for stmt in _append_only_ddl(engine.dialect.name, table):
                conn.execute(text(stmt))
    if engine.dialect.name in ("sqlite", "postgresql"):
        install_ledger_triggers(engine)


def open_store(url: str) -> Engine:
    engine = make_engine(url)
    create_schema(engine)
    return engine
