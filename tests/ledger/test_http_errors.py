"""The auditor HTTP API answers out-of-range parameters with a 4xx and an internal failure
with an opaque 500 naming an incident, never SQL, paths or a traceback."""
from __future__ import annotations

import logging
import re
import sqlite3

from fastapi.testclient import TestClient

from node.ledger.http import create_app, new_token

from .helpers import fill, make_ledger, open_engine


def _client(tmp_path):
    engine = open_engine(f"sqlite:///{tmp_path / 'node.db'}")
    ledger = make_ledger(engine)
    fill(ledger, 3)
    token, digest = new_token()
    client = TestClient(create_app(engine, ledger, [digest]), raise_server_exceptions=False)
    return client, {"Authorization": f"Bearer {token}"}, engine


def test_indices_beyond_int64_are_422_without_echoing_them(tmp_path):
    client, auth, _ = _client(tmp_path)
    r = client.get("/v1/ledger/entries", params={"start": 2**70}, headers=auth)
    assert r.status_code == 422 and "start" in r.json()["detail"]
    assert str(2**70) not in r.text
    r = client.get("/v1/ledger/entries", params={"start": 2**63 - 1}, headers=auth)
    assert r.status_code == 200 and r.json()["entries"] == []
    r = client.get("/v1/ledger/entries", params={"partner": "p" * 5_000}, headers=auth)
    assert r.status_code == 422 and "partner" in r.json()["detail"] and "ppp" not in r.text


def test_an_internal_failure_is_an_opaque_500_with_an_incident(tmp_path, caplog):
    client, auth, engine = _client(tmp_path)
    engine.dispose()
    con = sqlite3.connect(tmp_path / "node.db")
    con.execute("DROP TABLE ledger_entries")  # the database is damaged under the node
    con.close()
    with caplog.at_level(logging.ERROR, logger="shuqiao.incidents"):
        r = client.get("/v1/ledger/entries", params={"start": 0}, headers=auth)
    assert r.status_code == 500
    detail = r.json()["detail"]
    assert re.fullmatch(r"internal error; incident [0-9a-f]{12}", detail), detail
    assert not any(w in r.text.lower() for w in ("select", "sqlite", "ledger_entries", "traceback"))
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert detail.rsplit(" ", 1)[1] in logged and "no such table" not in logged
