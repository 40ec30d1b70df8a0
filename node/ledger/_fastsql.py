"""The statements of an append, compiled once per dialect and run on the DBAPI cursor.

A durable append is bound by the commit's fsync; what remains is Python. SQLAlchemy's
per-execution machinery (cache keys, result objects) costs about as much as SQLite
executing the statement, so the two or three statements every append runs are compiled
once by SQLAlchemy for the connection's dialect (same SQL, same type processing) and
executed on the underlying DBAPI cursor, inside the caller's SQLAlchemy transaction.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Dialect, Table, bindparam, insert


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
