"""Idempotency keys: a POST retried after a lost answer gets the first answer, not a second run.

Every POST of the service API carries `Idempotency-Key` (1–128 printable ASCII
characters, e.g. a UUID the business system makes per request). The node remembers, per
token, the key, a digest of the request and the answer. The same key again with the
same request gets the stored answer (header `Idempotent-Replayed: true`); with another
request, 422; while the first is still running, 409. Keys are forgotten after
`[service] idempotency_hours`. An answer that failed inside the node (5xx) is not kept,
so a retry runs again.
"""
from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from datetime import timedelta

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import and_, delete, insert, or_, select

from node.http.auth import Principal
from node.runtime.context import NodeContext
from node.storage.schema import idempotency_keys

KEY = re.compile(r"[\x21-\x7e]{1,128}")
HEADER = "Idempotency-Key"


def request_digest(*parts: bytes | str) -> str:
    """A digest of what identifies a request (path, body, uploaded file's bytes ...)."""
    h = hashlib.sha256()
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        h.update(len(data).to_bytes(8, "big") + data)
    return h.hexdigest()


def idempotent(ctx: NodeContext, principal: Principal, key: str | None, digest: str,
               run: Callable[[], tuple[int, dict]]) -> JSONResponse:
    """Run `run` once per (token, key); `run` returns (status, JSON body).

    A request under way holds its key in this process's memory (one `serve` process owns
    the data directory), and its answer is stored in the same commit that forgets expired
    keys: one commit per request. A node that stops mid-request has stored nothing, so
    the retry runs.
    """
    if key is None:
        raise HTTPException(status_code=428, detail=f"every POST needs an {HEADER} header "
                            "(a fresh UUID per request; send the same one again when retrying)")
    if not KEY.fullmatch(key):
        raise HTTPException(status_code=400, detail=f"{HEADER} must be 1-128 printable ASCII characters")
    where = (idempotency_keys.c.token_name == principal.name, idempotency_keys.c.key == key)
    claim = (principal.name, key)
    if not ctx.caches.requests_under_way.claim(claim):
        raise HTTPException(status_code=409, detail="the first request with this Idempotency-Key "
                            "is still running; retry later with the same key", headers={"Retry-After": "1"})
    try:
        expired = ctx.clock.now() - timedelta(hours=ctx.config.service.idempotency_hours)
        with ctx.engine.connect() as conn:
            row = conn.execute(select(idempotency_keys).where(*where, idempotency_keys.c.created_at >= expired)).first()
        if row is not None:
            return _replay(row, digest)
        status, body = run()
        if status < 500:  # an answer that failed inside the node is not kept: a retry runs again
            data = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
            with ctx.engine.begin() as conn:
                conn.execute(delete(idempotency_keys).where(
                    or_(idempotency_keys.c.created_at < expired, and_(*where))))
                conn.execute(insert(idempotency_keys).values(
                    token_name=principal.name, key=key, request_digest=digest, status=status, body=data,
                    created_at=ctx.clock.now()))
        return JSONResponse(body, status_code=status)
    finally:
        ctx.caches.requests_under_way.release(claim)


def _replay(row, digest: str) -> JSONResponse:
    if row.request_digest != digest:
        raise HTTPException(status_code=422, detail="this Idempotency-Key was used for another "
                            "request; use a fresh key for a new request")
    return JSONResponse(json.loads(row.body), status_code=row.status, headers={"Idempotent-Replayed": "true"})
