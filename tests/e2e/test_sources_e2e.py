"""A node on the real PostgreSQL server, registering from SQL and Excel through the CLI."""
from __future__ import annotations

import csv

import openpyxl
import pytest
import sqlalchemy as sa

from . import fixtures as fx

pytestmark = pytest.mark.e2e


def answers(path) -> dict[str, bool]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {r["身份证号"]: r["结果"] == "是" for r in csv.DictReader(f)}


def test_postgres_node_registers_from_sql_and_xlsx_and_answers(tmp_path, pg_database_url):
    s = fx.build(tmp_path, registry_size=800, applicants=200, storage_url=pg_database_url)
    # The agency's source system: a table in the same PostgreSQL server.
    engine = sa.create_engine(pg_database_url)
    half = len(s.registry) // 2
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE "参保人员" (sfzh text, months int)'))
        conn.execute(sa.text('INSERT INTO "参保人员" VALUES (:id, :m)'),
                     [{"id": p, "m": 12} for p in s.registry[:half]])
    engine.dispose()
    # A later refresh arrives as an Excel workbook.
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["公民身份号码", "缴费月数"])
    for p in s.registry:
        ws.append([p, 24])
    wb.save(tmp_path / "registry.xlsx")

    with s.fed:
        fx.start(s)
        hrss = s.cfg("hrss")
        r = s.fed.cli("dataset", "add", "--config", hrss, "--name", "flexible_workers",
                      "--sql", pg_database_url, "--table", "参保人员", "--id-column", "sfzh")
        assert f"version 1: {half} rows" in r.stdout
        fx.query(s, tmp_path / "v1.csv", check=True)
        r = s.fed.cli("dataset", "add", "--config", hrss, "--name", "flexible_workers",
                      "--xlsx", str(tmp_path / "registry.xlsx"), "--id-column", "公民身份号码")
        assert f"version 2: {len(s.registry)} rows" in r.stdout
        fx.query(s, tmp_path / "v2.csv", check=True)
        s.fed.cli("dataset", "retire", "--config", hrss, "flexible_workers", "--version", "1")
        listing = s.fed.cli("dataset", "list", "--config", hrss).stdout

    v1, v2 = answers(tmp_path / "v1.csv"), answers(tmp_path / "v2.csv")
    first_half, registry = set(s.registry[:half]), set(s.registry)
    assert v1 == {p: p in first_half for p in s.applicants}
    assert v2 == {p: p in registry for p in s.applicants}
    assert "retired" in listing
    engine = sa.create_engine(pg_database_url)
    with engine.connect() as conn:
        outcomes = conn.execute(sa.text("SELECT version, outcome FROM query_log ORDER BY seq")).all()
    engine.dispose()
    assert [tuple(o) for o in outcomes] == [(1, "answered"), (2, "answered")]
