"""/healthz and /readyz: no token, one status word, 503 naming nothing when a part is down."""
from __future__ import annotations

import logging
from types import SimpleNamespace

import sqlalchemy as sa
from fastapi import FastAPI
from fastapi.testclient import TestClient

from node.http.health import health_router


class _Ledger:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    def size(self) -> int:
        if self.fails:
            raise RuntimeError("ledger_state has no row /var/lib/shuqiao/node.db")
        return 7


def client(engine, ledger, serving=lambda: True) -> TestClient:
    app = FastAPI()
    app.include_router(health_router(SimpleNamespace(engine=engine, ledger=ledger), serving))
    return TestClient(app)


def test_ready_node(tmp_path):
    c = client(sa.create_engine(f"sqlite:///{tmp_path / 'node.db'}"), _Ledger())
    for path in ("/healthz", "/readyz"):
        r = c.get(path)
        assert (r.status_code, r.text) == (200, "ok")
        assert r.headers["cache-control"] == "no-store"


def test_each_missing_part_makes_it_unready_without_saying_which(tmp_path, caplog):
    good = sa.create_engine(f"sqlite:///{tmp_path / 'node.db'}")
    unreachable = sa.create_engine(f"sqlite:///{tmp_path / 'no' / 'such' / 'dir' / 'node.db'}")
    cases = {"gRPC": client(good, _Ledger(), serving=lambda: False),
             "database": client(unreachable, _Ledger()),
             "ledger": client(good, _Ledger(fails=True))}
    for part, c in cases.items():
        with caplog.at_level(logging.WARNING, logger="node.http.health"):
            r = c.get("/readyz")
        assert (r.status_code, r.text) == (503, "unavailable"), part
        assert c.get("/healthz").text == "ok"  # the process is up all the same
        assert part in caplog.text  # the reason goes to the log...
        assert "/var/lib" not in caplog.text  # ...by part and exception type, never a message
        caplog.clear()
