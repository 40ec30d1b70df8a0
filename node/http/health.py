"""`/healthz` and `/readyz` for load balancers and process supervisors.

No token: a load balancer holds none, and these say nothing an unauthenticated caller
could use. The body is one status word; no node id, version, size or error text, since
anyone who can reach the port can ask. (Partners keep gRPC health checking, over mTLS.)

* `/healthz`: the process is up and its HTTP thread answers (liveness; restart if not).
* `/readyz`: the node can serve (readiness; route traffic only if so): the database
  answers, the ledger's state row reads, and the gRPC listener is bound and not draining.
"""
from __future__ import annotations

import logging
from collections.abc import Callable

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse
from sqlalchemy import text

from node.runtime.context import NodeContext

log = logging.getLogger(__name__)

_NO_STORE = {"Cache-Control": "no-store"}


def _ready(ctx: NodeContext, grpc_serving: Callable[[], bool]) -> str | None:
    """None when ready, else which part is not (for the log only, never the response)."""
    if not grpc_serving():
        return "the gRPC listener is not serving"
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:  # any failure means not ready; the type goes to the log
        return f"the database does not answer ({type(exc).__name__})"
    try:
        ctx.ledger.size()
    except Exception as exc:
        return f"the ledger does not open ({type(exc).__name__})"
    return None


def health_router(ctx: NodeContext, grpc_serving: Callable[[], bool]) -> APIRouter:
    router = APIRouter()
    last = {"problem": None}

    @router.api_route("/healthz", methods=["GET", "HEAD"], response_class=PlainTextResponse,
                      include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok", headers=_NO_STORE)

    @router.api_route("/readyz", methods=["GET", "HEAD"], response_class=PlainTextResponse,
                      include_in_schema=False)
    def readyz() -> PlainTextResponse:
        problem = _ready(ctx, grpc_serving)
        if problem != last["problem"]:  # log changes, not every probe of a polling balancer
            last["problem"] = problem
            if problem:
                log.warning("not ready: %s", problem)
            else:
                log.info("ready")
        if problem:
            return PlainTextResponse("unavailable", status_code=503, headers=_NO_STORE)
        return PlainTextResponse("ok", headers=_NO_STORE)

    return router
