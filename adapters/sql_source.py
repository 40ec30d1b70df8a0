"""Relational databases through SQLAlchemy: a whole table, or a read-only query.

Rows are streamed with a server-side cursor where the driver has one (PostgreSQL's
psycopg, MySQL/MariaDB's pymysql) in batches of ``batch_size``; SQLite's cursor is lazy
already. The session is made read-only where the dialect allows it (PostgreSQL
``SET TRANSACTION READ ONLY``, MySQL/MariaDB ``SET SESSION TRANSACTION READ ONLY``,
SQLite ``PRAGMA query_only``), so a query that tries to write fails instead of writing.
SQL is never assembled from strings: tables are reflected and selected through
SQLAlchemy, which quotes identifiers; query text goes through ``sqlalchemy.text`` with
bound parameters.

Fingerprint: SHA-256 over the column names and every row's values in result order, each
value length-prefixed and NULL distinct from "". A table is read in primary-key order
when it has one, so an unchanged table always gives the same fingerprint; for a query,
add an ORDER BY to get the same guarantee.

Database error messages can echo data (e.g. a failed cast quotes the value), so they are
redacted before they reach a :class:`SourceError`.
"""

from __future__ import annotations

import datetime as dt
import decimal
import hashlib
import os
import re
import sqlite3
import urllib.parse
from collections.abc import Iterator, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from adapters.base import Row, Source, SourceError

__all__ = ["SqlSource", "open_sql", "sql_text"]

_EXACT_LIMIT = 2**53
_QUOTED = re.compile(r"""(["'`])(.*?)\1""", re.S)
_PLAIN_NAME = re.compile(r"[A-Za-z_][\w.$:-]*", re.ASCII)
_LONG_NUMBER = re.compile(r"\d{6,}")


def _redact(message: str) -> str:
    """First line of a database error, with quoted values and long numbers removed.

    Quoted plain names (tables, columns) are kept so the message stays actionable.
    """
    line = message.strip().splitlines()[0] if message.strip() else ""

    def keep_names(match: re.Match[str]) -> str:
        quote, inner = match.group(1), match.group(2)
        return match.group(0) if _PLAIN_NAME.fullmatch(inner) else f"{quote}…{quote}"

    return _LONG_NUMBER.sub("…", _QUOTED.sub(keep_names, line))


def _db_error(where: str, doing: str, exc: sa.exc.SQLAlchemyError, line: int | None = None
              ) -> SourceError:
    orig = getattr(exc, "orig", None)
    args = getattr(orig, "args", ())
    if len(args) == 2 and isinstance(args[0], int) and isinstance(args[1], str):
        detail = f"{_redact(args[1])} (error {args[0]})"  # MySQL drivers: (code, message)
    elif orig is not None:
        detail = _redact(str(orig))
    else:
        detail = type(exc).__name__
    return SourceError(f"{where}: {doing} failed: {detail}", line=line)


def sql_text(value: Any, column: str, line: int) -> str:
    """Convert a database value to text (None -> "")."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, decimal.Decimal):
        return format(value, "f")
    if isinstance(value, float):
        if value.is_integer() and abs(value) < _EXACT_LIMIT:
            return str(int(value))
        return repr(value)
    if isinstance(value, (dt.date, dt.time)):  # datetime is a date
        return value.isoformat()
    if isinstance(value, (bytes, bytearray, memoryview)):
        try:
            return bytes(value).decode("utf-8")
        except UnicodeDecodeError:
            raise SourceError(f"row {line}: column {column!r} holds binary data that is not "
                              "UTF-8 text", line=line) from None
    return str(value)


def _encode_value(value: Any) -> bytes:
    if value is None:
        return b"\x00"
    data = value.encode("utf-8", "surrogatepass")
    return b"\x01" + len(data).to_bytes(8, "big") + data


def _sqlite_read_only_engine(parsed: URL) -> sa.Engine:
    """An SQLite source opened read-only at the file level, unable to attach or create files.

    `mode=ro` makes the source file itself unwritable, but SQLite would still create a
    new file for `ATTACH '...'` or `VACUUM INTO '...'`; no attached database is allowed
    (a limit of zero, and an authorizer that denies ATTACH for good measure).
    """
    database = parsed.database or ""
    if database in ("", ":memory:"):
        return sa.create_engine(parsed, poolclass=NullPool)
    if database.startswith("file:"):
        target, _, query = database[5:].partition("?")
        options = [o for o in query.split("&") if o and not o.startswith(("mode=", "immutable="))]
    else:
        target, options = urllib.parse.quote(os.path.abspath(database)), []
    uri = "file:" + target + "?" + "&".join(options + ["mode=ro"])

    def deny_attach(action: int, *_: object) -> int:
        if action in (sqlite3.SQLITE_ATTACH, sqlite3.SQLITE_DETACH):
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    def connect() -> sqlite3.Connection:
        connection = sqlite3.connect(uri, uri=True, check_same_thread=False)
        connection.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
        connection.set_authorizer(deny_attach)
        return connection

    return sa.create_engine("sqlite://", creator=connect, poolclass=NullPool)


def _make_read_only(connection: sa.Connection) -> sa.Connection:
    dialect = connection.dialect.name
    if dialect == "postgresql":
        return connection.execution_options(postgresql_readonly=True)
    if dialect in ("mysql", "mariadb"):
        connection.exec_driver_sql("SET SESSION TRANSACTION READ ONLY")
    elif dialect == "sqlite":
        connection.exec_driver_sql("PRAGMA query_only = ON")
    else:
        return connection
    # The statement above may itself have opened a (read-write) transaction; end it so
    # that the reads run in a fresh, read-only one.
    connection.commit()
    return connection


class SqlSource(Source):
    """A table or query result; see :func:`open_sql`."""

    def __init__(self, url: str | URL, table: str | None, query: str | None,
                 schema: str | None, params: Mapping[str, Any] | None,
                 batch_size: int) -> None:
        if (table is None) == (query is None):
            raise SourceError("give exactly one of a table name or a query")
        try:
            parsed = make_url(url)
        except (sa.exc.ArgumentError, ValueError):
            raise SourceError("not a valid database URL (expected e.g. "
                              "postgresql+psycopg://user@host/db)") from None
        safe_url = parsed.render_as_string(hide_password=True)
        qualified = f"{schema}.{table}" if schema else table
        where = f"table {qualified!r} at {safe_url}" if table else f"query at {safe_url}"
        try:
            if parsed.get_backend_name() == "sqlite":
                self._engine = _sqlite_read_only_engine(parsed)
            else:
                self._engine = sa.create_engine(parsed, poolclass=NullPool)
        except (sa.exc.ArgumentError, sa.exc.NoSuchModuleError, ImportError) as exc:
            raise SourceError(f"{where}: cannot use this database URL: {exc}") from None
        self._connection: sa.Connection | None = None
        self._result: sa.CursorResult[Any] | None = None
        self._position = 0
        self._sha256 = hashlib.sha256(b"shuqiao/sql-rows/v1\x00")
        try:
            columns, total = self._execute(where, table, query, schema, params, batch_size)
        except BaseException:
            self._release()
            raise
        for name in columns:
            self._sha256.update(_encode_value(name))
        self._sha256.update(b"\xff")
        super().__init__(where, columns, total)

    def _execute(self, where: str, table: str | None, query: str | None,
                 schema: str | None, params: Mapping[str, Any] | None,
                 batch_size: int) -> tuple[list[str], int | None]:
        doing = "connecting"
        try:
            self._connection = _make_read_only(self._engine.connect())
            total = None
            if table is not None:
                doing = "reading the table definition"
                selected = self._reflect(where, table, schema)
                doing = "counting rows"
                total = self._connection.execute(
                    sa.select(sa.func.count()).select_from(selected)).scalar_one()
                statement: sa.Executable = sa.select(selected).order_by(
                    *selected.primary_key.columns)
            else:
                statement = sa.text(query)
            doing = "running the query"
            self._result = self._connection.execution_options(
                stream_results=True, yield_per=batch_size).execute(statement, params or {})
        except sa.exc.SQLAlchemyError as exc:
            raise _db_error(where, doing, exc) from None
        if not self._result.returns_rows:
            raise SourceError(f"{where}: the statement returns no rows; give a SELECT query")
        columns = [str(name) for name in self._result.keys()]
        duplicates = sorted({name for name in columns if columns.count(name) > 1})
        if not columns:
            raise SourceError(f"{where}: the query returns no columns")
        if duplicates:
            raise SourceError(f"{where}: duplicate column names {', '.join(map(repr, duplicates))}; "
                              "give them distinct aliases (SELECT a.id AS a_id, ...)")
        return columns, total

    def _reflect(self, where: str, table: str, schema: str | None) -> sa.Table:
        assert self._connection is not None
        try:
            return sa.Table(table, sa.MetaData(), schema=schema, autoload_with=self._connection)
        except sa.exc.NoSuchTableError:
            names = sa.inspect(self._connection).get_table_names(schema=schema)
            shown = ", ".join(repr(n) for n in sorted(names)[:50]) or "none"
            raise SourceError(f"{where}: no such table; tables available: {shown}") from None

    def _rows(self) -> Iterator[Row]:
        assert self._result is not None
        columns = self.columns
        update = self._sha256.update
        try:
            for record in self._result:
                self._position += 1
                line = self._position
                texts = [sql_text(value, column, line) for value, column in zip(record, columns)]
                for value, text in zip(record, texts):
                    update(_encode_value(None if value is None else text))
                yield Row(line, dict(zip(columns, texts)))
        except sa.exc.SQLAlchemyError as exc:
            raise _db_error(self.description, "reading rows", exc,
                            line=self._position + 1) from None

    def _digest(self) -> str:
        return self._sha256.hexdigest()

    def _release(self) -> None:
        try:
            if self._result is not None:
                self._result.close()
            if self._connection is not None:
                self._connection.close()
        finally:
            self._engine.dispose()

    def progress_position(self) -> int:
        return self._position


def open_sql(url: str | URL, table: str | None = None, query: str | None = None, *,
             schema: str | None = None, params: Mapping[str, Any] | None = None,
             batch_size: int = 10_000) -> SqlSource:
    """Open a table or a read-only query on any SQLAlchemy-supported database.

    Args:
        url: an SQLAlchemy URL, e.g. ``postgresql+psycopg://user@host:5432/db``,
            ``mysql+pymysql://user@host:3306/db`` or ``sqlite:///path.db``. The password
            is never shown in messages.
        table: a table name, reflected and read whole (in primary-key order if it has
            one). ``progress_total`` is then its row count.
        query: instead of a table, a SELECT (``:name`` placeholders bound from
            ``params``; write a literal colon as ``\\:``). ``progress_total`` is None.
        schema: the table's schema, if not the default one.
        params: bound parameters for ``query``.
        batch_size: rows fetched per round trip.

    Raises:
        SourceError: neither or both of table and query, bad URL, unreachable server,
            unknown table (the message lists the tables), a failing query, duplicate
            result column names; while iterating, database errors and non-UTF-8 binary
            values. Database messages are redacted of quoted values and long numbers.
    """
    if batch_size < 1:
        raise SourceError("batch_size must be 1 or more")
    return SqlSource(url, table, query, schema, params, batch_size)
