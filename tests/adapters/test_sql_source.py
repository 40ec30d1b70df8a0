"""SQL sources against SQLite, the real PostgreSQL and the real MariaDB servers.

Server tests skip when the server is unreachable, unless SHUQIAO_REQUIRE_SERVICES=1, in
which case they fail. The server URLs can be overridden with SHUQIAO_TEST_POSTGRES_URL
and SHUQIAO_TEST_MARIADB_URL. Every test table has a unique name and is dropped after.
"""

from __future__ import annotations

import datetime as dt
import decimal
import os
import random
import tracemalloc
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from adapters import InvalidRow, SourceError, ValidRow, open_source, open_sql, read_identifiers
from adapters.identifiers import synthetic_resident_id
from adapters.sql_source import _redact, sql_text

SERVERS = {
    "postgres": ("SHUQIAO_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
    "mariadb": ("SHUQIAO_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
}


def server_url(kind: str) -> str:
    """The server's URL, after checking it answers; skip (or fail) if it does not."""
    variable, default = SERVERS[kind]
    url = os.environ.get(variable, default)
    engine = sa.create_engine(url, connect_args={"connect_timeout": 5},
                              poolclass=sa.pool.NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(sa.text("SELECT 1"))
    except Exception as exc:  # noqa: BLE001 - any failure means "not reachable"
        reason = (f"{kind} server not reachable at "
                  f"{make_url(url).render_as_string(hide_password=True)} "
                  f"({type(exc).__name__}); set {variable} to point elsewhere")
        if os.environ.get("SHUQIAO_REQUIRE_SERVICES") == "1":
            pytest.fail(f"{reason}; SHUQIAO_REQUIRE_SERVICES=1 so this is a failure")
        pytest.skip(reason)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=[
    pytest.param("sqlite"),
    pytest.param("postgres", marks=pytest.mark.postgres),
    pytest.param("mariadb", marks=pytest.mark.mariadb),
])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'agency.db'}"
    return server_url(request.param)


class TableMaker:
    """Creates uniquely named tables and drops them all at teardown."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
        self.tables: list[sa.Table] = []

    def graduates(self, rows: list[dict[str, object]]) -> sa.Table:
        table = sa.Table(
            f"shuqiao_test_{uuid.uuid4().hex[:12]}", sa.MetaData(),
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
            sa.Column("sfzh", sa.String(32)),
            sa.Column("name", sa.String(64)),
            sa.Column("school", sa.String(64)),
            sa.Column("grad_date", sa.Date),
            sa.Column("subsidy", sa.Numeric(10, 2)),
            mysql_charset="utf8mb4",
        )
        self.tables.append(table)
        table.create(self.engine)
        with self.engine.begin() as connection:
            if rows:
                connection.execute(table.insert(), rows)
        return table

    def count(self, table: sa.Table) -> int:
        with self.engine.connect() as connection:
            return connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()

    def drop_all(self) -> None:
        for table in self.tables:
            table.drop(self.engine, checkfirst=True)
        self.engine.dispose()


@pytest.fixture
def tables(db_url: str) -> Iterator[TableMaker]:
    maker = TableMaker(db_url)
    try:
        yield maker
    finally:
        maker.drop_all()


GRADUATES = [
    {"id": 3, "sfzh": "11010519491231002X", "name": "张三", "school": "常州大学",
     "grad_date": dt.date(2024, 6, 30), "subsidy": decimal.Decimal("1500.00")},
    {"id": 1, "sfzh": "320402198501011230", "name": "李四", "school": "河海大学",
     "grad_date": None, "subsidy": None},
    {"id": 2, "sfzh": "not-an-id", "name": "王五", "school": "江苏理工学院",
     "grad_date": dt.date(2025, 7, 1), "subsidy": decimal.Decimal("12.50")},
    {"id": 4, "sfzh": "11010519491231002x", "name": "赵六", "school": "常州工学院",
     "grad_date": None, "subsidy": decimal.Decimal("0.00")},
]


def test_table_mode_reads_in_primary_key_order(tables: TableMaker) -> None:
    table = tables.graduates(GRADUATES)
    with open_sql(tables.url, table=table.name) as source:
        assert source.columns == ["id", "sfzh", "name", "school", "grad_date", "subsidy"]
        assert source.progress_total == 4
        rows = list(source)
        assert source.progress_position() == 4
    assert [r.line for r in rows] == [1, 2, 3, 4]
    assert [r.values["id"] for r in rows] == ["1", "2", "3", "4"]
    assert rows[0].values == {"id": "1", "sfzh": "320402198501011230", "name": "李四",
                              "school": "河海大学", "grad_date": "", "subsidy": ""}
    assert rows[2].values["grad_date"] == "2024-06-30"
    assert rows[1].values["subsidy"] == "12.50"
    assert rows[2].values["name"] == "张三"


def test_query_mode_with_parameters(tables: TableMaker) -> None:
    table = tables.graduates(GRADUATES)
    query = f"SELECT sfzh, school FROM {table.name} WHERE grad_date >= :since ORDER BY id"
    with open_sql(tables.url, query=query, params={"since": dt.date(2024, 1, 1)}) as source:
        assert source.columns == ["sfzh", "school"]
        assert source.progress_total is None
        assert [(r.line, r.values["school"]) for r in source] == [(1, "江苏理工学院"),
                                                                 (2, "常州大学")]


def test_fingerprint_is_stable_and_tracks_content(tables: TableMaker) -> None:
    table = tables.graduates(GRADUATES)

    def fingerprint(**kwargs: str) -> str:
        with open_sql(tables.url, **kwargs) as source:
            list(source)
            return source.fingerprint()

    first = fingerprint(table=table.name)
    assert fingerprint(table=table.name) == first
    if not tables.url.startswith("sqlite"):
        # SQLite has no column types in a raw query's result (NUMERIC comes back as a
        # float, "1500" instead of "1500.00"), so only typed servers give equal texts.
        assert fingerprint(query=f"SELECT * FROM {table.name} ORDER BY id") == first
    with tables.engine.begin() as connection:
        connection.execute(table.update().where(table.c.id == 4).values(subsidy=None))
    assert fingerprint(table=table.name) != first


def test_reader_over_a_table(tables: TableMaker) -> None:
    table = tables.graduates(GRADUATES)
    with open_sql(tables.url, table=table.name) as source:
        results = list(read_identifiers(source, "sfzh", "cn_resident_id", ["school"]))
    assert results == [
        ValidRow(1, "320402198501011230", {"school": "河海大学"}),
        InvalidRow(2, "invalid character"),
        ValidRow(3, "11010519491231002X", {"school": "常州大学"}),
        InvalidRow(4, "duplicate identifier (first seen on line 3)"),
    ]


@pytest.mark.parametrize("statement", [
    "INSERT INTO {t} (id, sfzh) VALUES (99, 'x')",
    "UPDATE {t} SET name = 'x'",
    "DELETE FROM {t}",
])
def test_queries_cannot_write(tables: TableMaker, statement: str) -> None:
    table = tables.graduates(GRADUATES)
    with pytest.raises(SourceError, match="running the query failed"):
        with open_sql(tables.url, query=statement.format(t=table.name)) as source:
            list(source)
    assert tables.count(table) == len(GRADUATES)


def test_unknown_table_lists_the_tables(tables: TableMaker) -> None:
    table = tables.graduates([])
    with pytest.raises(SourceError) as info:
        open_sql(tables.url, table="no_such_table_here")
    assert "no such table" in str(info.value)
    assert repr(table.name) in str(info.value)


def test_empty_table(tables: TableMaker) -> None:
    table = tables.graduates([])
    with open_source(tables.url, table=table.name) as source:
        assert list(source) == []
        assert len(source.fingerprint()) == 64


def test_duplicate_result_columns_are_refused(tables: TableMaker) -> None:
    table = tables.graduates(GRADUATES)
    with pytest.raises(SourceError, match="duplicate column names 'id'"):
        open_sql(tables.url, query=f"SELECT id, id FROM {table.name}")


def test_streams_in_bounded_memory(tables: TableMaker) -> None:
    rng = random.Random(5)
    rows = [{"id": i, "sfzh": synthetic_resident_id(rng), "name": "职工" * 10,
             "school": f"学校{i % 50}" * 5, "grad_date": None, "subsidy": None}
            for i in range(20_000)]
    table = tables.graduates(rows)
    del rows
    tracemalloc.start()
    try:
        with open_sql(tables.url, table=table.name, batch_size=500) as source:
            count = sum(1 for _ in source)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == 20_000
    # Fetching all rows at once would hold 20k rows of ~200 bytes of text each.
    assert peak < 2 * 1024 * 1024, peak


@pytest.mark.postgres
def test_postgres_uses_a_server_side_cursor() -> None:
    url = server_url("postgres")
    maker = TableMaker(url)
    try:
        table = maker.graduates([{"id": i, "sfzh": str(i)} for i in range(1_000)])
        name = f"shuqiao_stream_{uuid.uuid4().hex[:8]}"
        tagged = make_url(url).update_query_dict({"application_name": name})
        with open_sql(tagged, table=table.name, batch_size=100) as source:
            rows = iter(source)
            next(rows)  # SQLAlchemy fetches one row first, then batches of yield_per
            next(rows)
            with maker.engine.connect() as observer:
                activity = observer.execute(
                    sa.text("SELECT query FROM pg_stat_activity WHERE application_name = :n"),
                    {"n": name}).scalar_one()
            assert activity.upper().startswith("FETCH FORWARD 100")
            assert sum(1 for _ in rows) == 998
    finally:
        maker.drop_all()


def test_table_and_query_are_exclusive(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    with pytest.raises(SourceError, match="exactly one"):
        open_sql(url)
    with pytest.raises(SourceError, match="exactly one"):
        open_sql(url, table="t", query="SELECT 1")


def test_passwords_never_appear_in_messages() -> None:
    with pytest.raises(SourceError) as info:
        open_sql("postgresql+psycopg://agency:topsecret@127.0.0.1:1/db", table="t")
    assert "topsecret" not in str(info.value)
    assert "agency:***@127.0.0.1:1/db" in str(info.value)
    with pytest.raises(SourceError) as info:
        open_sql("not a url :topsecret", table="t")
    assert "topsecret" not in str(info.value)


def test_database_messages_are_redacted() -> None:
    assert _redact('invalid input syntax for type integer: "11010519491231002X"') == \
        'invalid input syntax for type integer: "…"'
    assert _redact('relation "graduates" does not exist\nLINE 1: ...') == \
        'relation "graduates" does not exist'
    assert _redact("Incorrect value: '张三' for column `name` at row 3") == \
        "Incorrect value: '…' for column `name` at row 3"
    assert _redact("key (sfzh)=(110105194912310021) already exists") == \
        "key (sfzh)=(…) already exists"


def test_sql_text_conversions() -> None:
    assert sql_text(None, "c", 1) == ""
    assert sql_text(decimal.Decimal("1E+2"), "c", 1) == "100"
    assert sql_text(2.0, "c", 1) == "2"
    assert sql_text(2.5, "c", 1) == "2.5"
    assert sql_text(True, "c", 1) == "true"
    assert sql_text(dt.datetime(2024, 1, 2, 3, 4, 5), "c", 1) == "2024-01-02T03:04:05"
    assert sql_text("张三".encode(), "c", 1) == "张三"
    with pytest.raises(SourceError, match="binary data") as info:
        sql_text(b"\xff\xfe", "photo", 7)
    assert info.value.line == 7
