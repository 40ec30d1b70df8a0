"""Tokens, roles, scopes, sessions, CSRF, rates and idempotency keys, attacked over HTTP."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import pytest
from fastapi import Depends, FastAPI, Header, Request
from fastapi.testclient import TestClient

from node.core.clock import FixedClock
from node.core.config import NodeConfig
from node.core.service_config import Role
from node.http.auth import SESSION_COOKIE, Authenticator, Principal, csrf_token
from node.ledger.http import hash_token as digest_of
from node.http.idempotency import idempotent, request_digest
from node.runtime.context import NodeCaches, open_store

TOKENS = {"ops": "operator-token-1", "ops2": "operator-token-2", "adm": "admin-token-1", "aud": "auditor-token-1"}


def config(tmp_path, *, drop: str | None = None, rate: int = 600) -> NodeConfig:
    roles = {"ops": "operator", "ops2": "operator", "adm": "admin", "aud": "auditor"}
    tokens = [{"name": n, "digest": digest_of(t), "role": roles[n],
               "purposes": ["housing-loan"] if n == "ops2" else [], "requests_per_minute": rate}
              for n, t in TOKENS.items() if n != drop]
    return NodeConfig.model_validate({
        "node": {"id": "gjj", "data_dir": str(tmp_path)},
        "tls": {"ca": "ca.pem", "cert": "c.pem", "key": "k.pem"},
        "http": {"tokens": tokens}})


@pytest.fixture
def world(tmp_path):
    ctx = SimpleNamespace(config=config(tmp_path), engine=open_store(f"sqlite:///{tmp_path / 'n.db'}"),
                          clock=FixedClock(), caches=NodeCaches())
    auth = Authenticator(ctx)
    app = FastAPI()
    calls = []

    @app.get("/ops")
    def ops(p: Principal = Depends(auth.require(Role.OPERATOR))) -> dict:
        return {"name": p.name, "purpose_ok": p.may_state("housing-loan"), "other_ok": p.may_state("tax")}

    @app.post("/ops")
    async def ops_post(request: Request, p: Principal = Depends(auth.require(Role.OPERATOR)),
                       key: str | None = Header(default=None, alias="Idempotency-Key")):
        body = await request.body()

        def run():
            calls.append(body)
            return 201, {"n": len(calls)}
        return idempotent(ctx, p, key, request_digest("/ops", body), run)

    @app.post("/form")
    async def form(request: Request, p: Principal = Depends(auth.require(Role.OPERATOR))):
        return {"field": (await request.form()).get("field")}  # the form the CSRF check read

    @app.get("/adm")
    def adm(p: Principal = Depends(auth.require(Role.ADMIN))) -> dict:
        return {"name": p.name}

    return SimpleNamespace(ctx=ctx, auth=auth, client=TestClient(app), calls=calls, tmp_path=tmp_path)


def bearer(name: str) -> dict:
    return {"Authorization": f"Bearer {TOKENS[name]}"}


def test_roles_are_enforced_per_route(world):
    c = world.client
    assert c.get("/ops").status_code == 401
    assert c.get("/ops", headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    assert c.get("/ops", headers={"Authorization": TOKENS["ops"]}).status_code == 401  # no scheme
    assert c.get("/ops", headers={"Authorization": f"Bearer {digest_of(TOKENS['ops'])}"}).status_code == 401
    assert c.get("/ops", headers=bearer("ops")).json()["name"] == "ops"
    for name in ("adm", "aud"):
        r = c.get("/ops", headers=bearer(name))
        assert r.status_code == 403 and "operator" in r.json()["detail"]
    assert c.get("/adm", headers=bearer("ops")).status_code == 403
    assert c.get("/adm", headers=bearer("adm")).status_code == 200


def test_scopes_travel_with_the_principal(world):
    assert world.client.get("/ops", headers=bearer("ops")).json() == {"name": "ops", "purpose_ok": True, "other_ok": True}
    assert world.client.get("/ops", headers=bearer("ops2")).json() == {"name": "ops2", "purpose_ok": True,
                                                                       "other_ok": False}


def test_rate_limit_per_token(tmp_path):
    ctx = SimpleNamespace(config=config(tmp_path, rate=3), engine=open_store(f"sqlite:///{tmp_path / 'n.db'}"),
                          clock=FixedClock())
    auth = Authenticator(ctx)
    app = FastAPI()
    app.get("/ops")(lambda p=Depends(auth.require(Role.OPERATOR)): {"ok": True})
    c = TestClient(app)
    assert [c.get("/ops", headers=bearer("ops")).status_code for _ in range(3)] == [200] * 3
    r = c.get("/ops", headers=bearer("ops"))
    assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1
    assert c.get("/ops", headers=bearer("ops2")).status_code == 200  # another token has its own


def test_session_needs_csrf_on_posts_and_ends_with_its_token(world):
    secret = world.auth.open_session(Principal("ops", Role.OPERATOR))
    c = world.client
    c.cookies.set(SESSION_COOKIE, secret)
    assert c.get("/ops").status_code == 200
    h = {"Idempotency-Key": "k1"}
    assert c.post("/ops", content=b"x", headers=h).status_code == 403  # no CSRF token
    assert c.post("/ops", content=b"x", headers={**h, "X-CSRF-Token": csrf_token("other")}).status_code == 403
    assert c.post("/ops", content=b"x", headers={**h, "X-CSRF-Token": csrf_token(secret)}).status_code == 201
    assert c.post("/form", data={"csrf": csrf_token(secret), "field": "v"}).json() == {"field": "v"}
    assert c.post("/form", data={"csrf": "", "field": "v"}).status_code == 403
    # A reload that revokes the token ends the session.
    world.ctx.config = config(world.tmp_path, drop="ops")
    assert c.get("/ops").status_code == 401


def test_session_expires_when_idle(world):
    secret = world.auth.open_session(Principal("aud", Role.AUDITOR))
    world.client.cookies.set(SESSION_COOKIE, secret)
    assert world.client.get("/ops").status_code == 403
    world.ctx.clock.advance(minutes=61)
    assert world.client.get("/ops").status_code == 401
    world.ctx.clock.advance(minutes=-61)
    assert world.client.get("/ops").status_code == 401  # deleted, not only refused


def test_a_session_in_use_stays_open_though_its_use_is_written_now_and_then(world):
    secret = world.auth.open_session(Principal("aud", Role.AUDITOR))
    world.client.cookies.set(SESSION_COOKIE, secret)
    for _ in range(4):  # 200 minutes in all, never 60 idle
        world.ctx.clock.advance(minutes=50)
        assert world.client.get("/ops").status_code == 403  # known (its role refused), not 401
    world.ctx.clock.advance(seconds=30)
    assert world.client.get("/ops").status_code == 403


def test_a_forged_or_stale_cookie_opens_nothing(world):
    world.client.cookies.set(SESSION_COOKIE, "forged")
    assert world.client.get("/ops").status_code == 401


def test_idempotency_key_replays_and_refuses_reuse(world):
    c = world.client
    assert c.post("/ops", content=b"a", headers=bearer("ops")).status_code == 428
    assert c.post("/ops", content=b"a", headers={**bearer("ops"), "Idempotency-Key": "x" * 129}).status_code == 400
    h = {**bearer("ops"), "Idempotency-Key": "req-1"}
    first = c.post("/ops", content=b"a", headers=h)
    again = c.post("/ops", content=b"a", headers=h)
    assert first.status_code == again.status_code == 201 and first.json() == again.json() == {"n": 1}
    assert again.headers["Idempotent-Replayed"] == "true"
    assert c.post("/ops", content=b"b", headers=h).status_code == 422
    # Keys are per token: another holder's same key is another request.
    assert c.post("/ops", content=b"a", headers={**bearer("ops2"), "Idempotency-Key": "req-1"}).json() == {"n": 2}
    assert len(world.calls) == 2


def test_concurrent_retries_run_once(world):
    c, results = world.client, []
    h = {**bearer("ops"), "Idempotency-Key": "same"}

    def post():
        results.append(c.post("/ops", content=b"z", headers=h).status_code)
    threads = [threading.Thread(target=post) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len(world.calls) == 1
    assert set(results) <= {201, 409} and 201 in results


def test_an_answer_is_kept_for_its_hours_only(world):
    c, h = world.client, {**bearer("ops"), "Idempotency-Key": "kept"}
    assert c.post("/ops", content=b"a", headers=h).json() == {"n": 1}
    world.ctx.clock.advance(hours=23)
    assert c.post("/ops", content=b"a", headers=h).headers["Idempotent-Replayed"] == "true"
    world.ctx.clock.advance(hours=2)  # past [service] idempotency_hours: a new request
    assert c.post("/ops", content=b"b", headers=h).json() == {"n": 2}
    assert c.post("/ops", content=b"b", headers=h).json() == {"n": 2}


def test_a_failed_run_keeps_nothing(world):
    app_ctx, calls = world.ctx, []
    from node.http.idempotency import idempotent, request_digest
    p = Principal("ops", Role.OPERATOR)

    def failing():
        calls.append(1)
        return 503, {"detail": "partner unreachable"}
    for _ in range(2):
        assert idempotent(app_ctx, p, "k", request_digest("x"), failing).status_code == 503
    assert len(calls) == 2  # the retry ran again


def test_serve_keeps_temporary_files_in_an_owner_only_folder_of_the_data_dir(tmp_path):
    import os
    import stat
    import tempfile
    from node.server.serve import private_temp_dir
    before = tempfile.tempdir
    try:
        (tmp_path / "tmp").mkdir(mode=0o777)
        (tmp_path / "tmp" / "left-by-a-killed-process").write_bytes(b"x")
        folder = private_temp_dir(tmp_path)
        assert stat.S_IMODE(os.stat(folder).st_mode) == 0o700
        assert list(folder.iterdir()) == []  # leftovers deleted
        assert tempfile.gettempdir() == str(folder)  # where the form parser's spooled files go
        with tempfile.NamedTemporaryFile() as named:
            assert os.path.dirname(named.name) == str(folder)
    finally:
        tempfile.tempdir = before
