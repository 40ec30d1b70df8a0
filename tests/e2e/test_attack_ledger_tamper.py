"""Someone edits the stopped agency node's ledger in node.db (issue 9, item 9).

The thief drops the append-only trigger, as anyone with the file could, and rewrites an
answered query's entry. `shuqiao serve` must refuse to start with one line naming the
entry; with --accept-damaged-ledger it starts, and that decision is in the ledger.
"""
from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time

import pytest

from node.rpc.shuqiao.v1 import membership_pb2 as pb

from . import fixtures as fx
from .fixtures import blinded, header

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("tamper"), registry_size=200, applicants=20)
    fx.start(s)
    fx.register(s)
    fx.evaluate(s, [header(s), pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(3))),
                    pb.EvaluateRequest(finish=pb.Finish())])
    s.fed.stop("hrss")
    yield s
    s.fed.close()


def _db(s) -> sqlite3.Connection:
    return sqlite3.connect(s.fed.nodes["hrss"].directory / "node.db")


def _completed_query_entry(s) -> int:
    with _db(s) as db:
        for idx, entry in db.execute("SELECT idx, entry FROM ledger_entries ORDER BY idx"):
            body = json.loads(bytes(entry))
            if body["type"] == "query" and body["phase"] == "completed":
                return idx
    raise AssertionError("no completed query in the ledger")


def _serve(s, *extra: str, timeout: float = 60) -> subprocess.CompletedProcess:
    node = s.fed.nodes["hrss"]
    return subprocess.run([sys.executable, "-m", "node", "serve", "--config", str(node.config_path),
                           *extra], capture_output=True, text=True, timeout=timeout,
                          env={**__import__("os").environ, "COLUMNS": "400"})


def test_edited_ledger_entry_stops_serve(scenario):
    idx = _completed_query_entry(scenario)
    with _db(scenario) as db:  # what a thief with the file does: the trigger is no obstacle
        db.execute("DROP TRIGGER ledger_entries_no_update")
        (entry,) = db.execute("SELECT entry FROM ledger_entries WHERE idx = ?", (idx,)).fetchone()
        forged = bytes(entry).replace(b'"elements":3', b'"elements":1')
        assert forged != bytes(entry)
        db.execute("UPDATE ledger_entries SET entry = ? WHERE idx = ?", (forged, idx))
    size_before = _size(scenario)
    for check in ("tail", "full"):
        started = time.monotonic()
        result = _serve(scenario, "--check-ledger", check)
        assert result.returncode != 0
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, result.stderr
        assert f"entry {idx}" in lines[0] and "--accept-damaged-ledger" in lines[0]
        assert "Traceback" not in result.stderr
        assert time.monotonic() - started < 30
    assert _size(scenario) == size_before  # nothing was appended on top


def test_accepted_damage_is_ledgered_and_serve_starts(scenario):
    node = scenario.fed.nodes["hrss"]
    port_file = node.directory / "serve.port"
    port_file.unlink(missing_ok=True)
    before = _size(scenario)
    process = subprocess.Popen([sys.executable, "-m", "node", "serve", "--config", str(node.config_path),
                                "--port-file", str(port_file), "--accept-damaged-ledger"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True)
    node.process = process  # stopped with the federation
    deadline = time.monotonic() + 60
    while not port_file.exists():
        assert process.poll() is None, "serve exited despite --accept-damaged-ledger"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    scenario.fed.stop("hrss")
    with _db(scenario) as db:
        rows = [json.loads(bytes(e)) for (e,) in db.execute(
            "SELECT entry FROM ledger_entries WHERE idx >= ? ORDER BY idx", (before,))]
    accepted = [r for r in rows if r["type"] == "admin" and r["action"] == "damaged_ledger_accepted"]
    assert len(accepted) == 1
    assert accepted[0]["details"]["first"].startswith("entry ")
    # the damage is still there: the next plain start refuses again
    assert _serve(scenario).returncode != 0


def _size(s) -> int:
    with _db(s) as db:
        return db.execute("SELECT COUNT(*) FROM ledger_entries").fetchone()[0]
