"""What a user is told about failures the CLI did not foresee: one actionable sentence."""
from __future__ import annotations

import errno
import sqlite3
import zlib

import sqlalchemy as sa

from node.cli.failures import explain, report, state


def _raised(exc):
    try:
        raise exc
    except Exception as caught:
        return caught


def _database_error(tmp_path, setup):
    path = tmp_path / "node.db"
    setup(path)
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.05})
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE IF NOT EXISTS t (a INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
    except sa.exc.DBAPIError as exc:
        return exc
    finally:
        engine.dispose()
    raise AssertionError("no database error")


def test_disk_full_permission_and_damaged_input_get_their_own_sentence():
    assert "no space left" in explain(_raised(OSError(errno.ENOSPC, "No space left on device")))
    denied = explain(_raised(PermissionError(errno.EACCES, "denied", "/srv/node/var/node.db")))
    assert "permission denied" in denied and "/srv/node/var/node.db" in denied
    assert "not a valid .xlsx" in explain(_raised(zlib.error("Error -3 while decompressing")))


def test_a_locked_and_a_damaged_database_are_named(tmp_path):
    holder = {}

    def lock(path):
        holder["con"] = con = sqlite3.connect(path, isolation_level=None)
        con.execute("CREATE TABLE t (a INTEGER)")
        con.execute("BEGIN EXCLUSIVE")
    locked = _database_error(tmp_path, lock)
    assert "locked by another process" in explain(locked)
    holder["con"].close()

    damaged = tmp_path / "other"
    damaged.mkdir()
    exc = _database_error(damaged, lambda p: p.write_bytes(b"\x00" * 4096))
    assert "database is damaged" in explain(exc)


def test_anything_else_is_an_incident_without_its_message(tmp_path):
    state.update(data_dir=tmp_path, debug=False)
    line, code = report(_raised(ValueError("320411197012153512 is bad")), "dataset add")
    assert code == 1 and line.startswith("internal error; incident ")
    assert "320411197012153512" not in line
    logged = (tmp_path / "logs" / "incidents.log").read_text()
    assert line.split()[3] in logged and "ValueError" in logged
    assert "320411197012153512" not in logged
    assert (tmp_path / "logs" / "incidents.log").stat().st_mode & 0o077 == 0
