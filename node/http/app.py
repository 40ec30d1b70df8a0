"""The node's HTTP API: auditors read the ledger, admins inspect datasets and policy,
operators check applicants in real time (node/http/service.py) and run batch jobs
(node/http/jobs.py), a monitoring system scrapes /metrics (node/http/metrics.py); /docs
and /openapi.json describe it all (node/http/docs.py).

Role-scoped bearer tokens, configured only as SHA-256 digests; HTTPS with the node's own
certificate (the federation CA) unless `[http] tls = false`. Served by uvicorn on a
thread of `shuqiao serve`; nothing is built at import time.
"""
from __future__ import annotations

import threading
from collections.abc import Callable, Iterable

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Response
from pydantic import BaseModel

from node.core.service_config import Role
from node.http.auth import Authenticator
from node.runtime.context import NodeContext


class GrantOut(BaseModel):
    partner: str
    purposes: list[dict]
    kinds: list[str]
    predicate_columns: list[str]
    label_attributes: list[str]
    min_elements: int
    max_elements: int
    daily_elements: int | None
    monthly_elements: int | None
    epoch_elements: int | None
    dp_epsilon: float | None
    dp_budget: float | None


class DatasetPolicyOut(BaseModel):
    name: str
    description: str
    oprf_mode: str
    epoch_days: int
    grace_days: int
    grants: list[GrantOut]


class VersionOut(BaseModel):
    name: str
    version: int
    id_type: str
    rows: int
    invalid: int
    status: str
    source_kind: str
    source_sha256: str


class ConfigStatusOut(BaseModel):
    """The policy in force against the config file on disk."""
    enforced_policy_digest: str
    enforced_config_digest: str
    config_file: str | None
    file_differs: bool
    warning: str | None
    last_reload: dict | None


def admin_router(ctx: NodeContext, auth: Authenticator) -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Depends(auth.require(Role.ADMIN))])

    @router.get("/partners/{partner}/datasets")
    def offers(partner: str) -> list[dict]:
        """What `partner` offers this node and this node's own grant there (node/asker/offers.py)."""
        from node.asker.offers import list_offers, offer
        from node.core.errors import ConfigError, PartnerError
        try:
            return [offer(info) for info in list_offers(ctx, partner)]
        except ConfigError as exc:  # not a configured partner, or no address to reach it
            raise HTTPException(status_code=404, detail=str(exc)) from None
        except PartnerError as exc:
            raise HTTPException(status_code=502, detail=str(exc)) from None

    @router.get("/config", response_model=ConfigStatusOut)
    def config_status() -> ConfigStatusOut:
        return _config_status(ctx)

    @router.get("/policy", response_model=list[DatasetPolicyOut])
    def policy(response: Response) -> list[DatasetPolicyOut]:
        """The policy this node enforces now (a reload changes it; the file alone does not)."""
        from node.runtime.admin_log import policy_digest
        from node.runtime.live_config import file_warning
        cfg = ctx.config  # one snapshot for the whole answer
        warning = file_warning(policy_digest(cfg), ctx.config_path)
        if warning:
            response.headers["Warning"] = '199 shuqiao "the config file differs from the enforced policy"'
        return [DatasetPolicyOut(
            name=d.name, description=d.description, oprf_mode=d.oprf_mode, epoch_days=d.epoch_days,
            grace_days=d.grace_days,
            grants=[GrantOut(**g.model_dump(mode="json", include=set(GrantOut.model_fields)))
                    for g in d.grants]) for d in cfg.datasets]

    @router.get("/usage")
    def usage(partner: str | None = None) -> list[dict]:
        """Each grant's use: elements per quota window against its limit, DP budget spent
        in the current key epoch against the budget (node/policy/usage.py)."""
        from dataclasses import asdict

        from node.policy.usage import all_use
        with ctx.engine.connect() as conn:
            return [asdict(u) for u in all_use(conn, ctx.config, ctx.clock.now(), partner)]

    @router.get("/datasets", response_model=list[VersionOut])
    def datasets() -> list[VersionOut]:
        from node.datasets.registration import list_versions
        with ctx.engine.connect() as conn:
            return [VersionOut(name=v.name, version=v.version, id_type=v.id_type, rows=v.row_count,
                               invalid=v.invalid_count, status=v.status, source_kind=v.source_kind,
                               source_sha256=v.source_fingerprint) for v in list_versions(conn)]

    return router


def auditor_digests(cfg) -> list[str]:
    """The digests that open the ledger routes: auditor tokens of either form."""
    return [*cfg.http.auditor_tokens, *(t.digest for t in cfg.http.tokens if t.role is Role.AUDITOR)]


def _config_status(ctx: NodeContext) -> ConfigStatusOut:
    from node.runtime.admin_log import config_digest, policy_digest
    from node.runtime.live_config import file_warning, read_status
    cfg = ctx.config
    warning = file_warning(policy_digest(cfg), ctx.config_path)
    return ConfigStatusOut(enforced_policy_digest=policy_digest(cfg),
                           enforced_config_digest=config_digest(cfg),
                           config_file=str(ctx.config_path) if ctx.config_path else None,
                           file_differs=warning is not None, warning=warning,
                           last_reload=read_status(cfg.data_dir))


def create_app(ctx: NodeContext, *, grpc_serving: Callable[[], bool],
               extensions: Iterable[Callable[[FastAPI, NodeContext, Authenticator], None]] = ()) -> FastAPI:
    """The node's API; `grpc_serving` says whether the node's gRPC listener serves (/readyz).

    `extensions` add routes above this layer (the console, node/console/), before the
    ledger app takes every remaining path."""
    from node.http.docs import docs_router
    from node.http.health import health_router
    from node.http.headers import SecurityHeaders
    from node.http.jobs import jobs_router
    from node.http.limits import BodyLimit
    from node.http.service import MAX_CHECK_BYTES, service_router
    from node.http.uploads import UploadBound
    from node.http.metrics import metrics_router
    from node.ledger.http import create_app as ledger_app
    from node.ledger.http import guard
    app = ledger_app(ctx.engine, ctx.ledger, auditor_digests(ctx.config))
    # The ledger app requires an auditor token on every route; admin routes get their own,
    # and the health probes none (they are matched before the mount).
    outer = FastAPI(title="Shuqiao node", docs_url=None, redoc_url=None, openapi_url=None)
    outer.add_middleware(UploadBound, ctx=ctx)  # every API body, inside the incident guard
    guard(outer)
    outer.add_middleware(BodyLimit, limits={("POST", "/v1/checks"): MAX_CHECK_BYTES})
    outer.add_middleware(SecurityHeaders, tls=ctx.config.http.tls)
    auth = Authenticator(ctx)
    outer.include_router(health_router(ctx, grpc_serving))
    outer.include_router(service_router(ctx, auth))
    outer.include_router(admin_router(ctx, auth))
    outer.include_router(metrics_router(ctx, auth))
    outer.include_router(jobs_router(ctx, auth))
    outer.include_router(docs_router(auth))
    for extend in extensions:
        extend(outer, ctx, auth)
    outer.mount("/", app)
    outer.state.auditor_app = app  # its tokens change on a reload (HttpServer.apply_config)
    return outer


class HttpServer:
    """uvicorn on a background thread; `start()` returns the bound port."""

    def __init__(self, ctx: NodeContext, *, grpc_serving: Callable[[], bool],
                 extensions: Iterable[Callable[[FastAPI, NodeContext, Authenticator], None]] = ()) -> None:
        import uvicorn
        cfg = ctx.config
        host, port = cfg.http.listen.rsplit(":", 1)
        tls = {}
        if cfg.http.tls:
            tls = {"ssl_certfile": str(cfg.path(cfg.tls.cert)), "ssl_keyfile": str(cfg.path(cfg.tls.key))}
            if cfg.tls.key_sealed:
                from node.keys.pki import tls_key_passphrase
                tls["ssl_keyfile_password"] = tls_key_passphrase(ctx.kek).expose().decode()
        # No Server header: unauthenticated callers (/healthz) learn nothing of the software.
        # No log_config: uvicorn's loggers go through the node's handler and format (JSON lines too).
        self.app = create_app(ctx, grpc_serving=grpc_serving, extensions=extensions)
        self.config = uvicorn.Config(self.app, host=host.strip("[]"),
                                     port=int(port), log_level="warning", access_log=False,
                                     server_header=False, log_config=None, **tls)
        self.server = uvicorn.Server(self.config)
        self.thread = threading.Thread(target=self.server.run, name="http", daemon=True)

    def apply_config(self, cfg) -> None:
        """A reload's auditor tokens (admin tokens are read per request from the context)."""
        self.app.state.auditor_app.state.token_digests = [t.encode() for t in auditor_digests(cfg)]

    def start(self, timeout: float = 20.0) -> int:
        import time
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise OSError(f"the HTTP API could not listen on {self.config.host}:{self.config.port}")
            time.sleep(0.02)
        return self.server.servers[0].sockets[0].getsockname()[1]

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)
