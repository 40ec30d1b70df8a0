"""`shuqiao serve`: one node, one process — gRPC with mutual TLS and health checking."""
from __future__ import annotations

import logging
import os
import signal
import threading
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from node.core.errors import StorageError
from node.agency.statistics import StatisticsAnswerer
from node.agency.membership import MembershipAnswerer
from node.transport.identity import PartnerInterceptor, peer_node_id
from node.runtime.context import NodeContext
from node.transport.identity import IncidentInterceptor
from node.runtime.data_lock import DataDirLock
from node.transport.channels import grpc_options
from node.keys.pki import load_tls_identity
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.rpc.shuqiao.v1 import statistics_pb2_grpc
from node.transport.identity import StreamLimitInterceptor

log = logging.getLogger(__name__)


def server_credentials(ctx: NodeContext) -> grpc.ServerCredentials:
    tls = ctx.config.tls
    cert, key = load_tls_identity(ctx.config.path(tls.cert), ctx.config.path(tls.key),
                                  kek=ctx.kek if tls.key_sealed else None)
    ca = ctx.config.path(tls.ca).read_bytes()
    return grpc.ssl_server_credentials([(key.expose(), cert)], root_certificates=ca,
                                       require_client_auth=True)


class NodeServer:
    """A running node. `start()` binds and returns the port; `stop()` drains calls."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        cfg = ctx.config
        self.health = health.HealthServicer()
        self.limits = StreamLimitInterceptor.from_config(cfg.grpc, (a.id for a in cfg.auditors))
        self.partners = PartnerInterceptor((p.id for p in cfg.partners), (a.id for a in cfg.auditors))
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=cfg.grpc.server_threads, thread_name_prefix="grpc"),
            interceptors=[IncidentInterceptor(), self.partners, self.limits],
            options=grpc_options(cfg.grpc.max_message_bytes, cfg.grpc.keepalive_seconds,
                                 server=True),
            maximum_concurrent_rpcs=4 * cfg.grpc.server_threads)
        pb_grpc.add_MembershipServicer_to_server(MembershipAnswerer(ctx), self.server)
        statistics_pb2_grpc.add_StatisticsServicer_to_server(StatisticsAnswerer(ctx), self.server)
        from node.ledger.grpc_service import LedgerService
        from node.rpc.shuqiao.v1 import ledger_pb2_grpc
        ledger_pb2_grpc.add_LedgerServicer_to_server(LedgerService(ctx.ledger, peer_node_id), self.server)
        self.http = None
        from node.jobs.worker import JobWorkers
        self.jobs = JobWorkers(ctx)  # batch jobs of the service API (node/jobs/)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port: int | None = None
        self.serving = False  # the gRPC listener is bound and started, and not stopping

    def start(self) -> int:
        from node.runtime.admin_log import record_policy_if_changed
        self.ctx.engine  # schema ready before the first call
        private_temp_dir(self.ctx.config.data_dir)
        record_policy_if_changed(self.ctx)  # the partner list and policy this node runs with
        from node.runtime.ledger_key import certify_at_start
        certify_at_start(self.ctx)  # the ledger key certified by the TLS identity, for auditors
        self.ctx.pool.warm()
        self.port = self.server.add_secure_port(self.ctx.config.grpc.listen,
                                                server_credentials(self.ctx))
        if not self.port:
            raise OSError(f"cannot listen on {self.ctx.config.grpc.listen}")
        self.server.start()
        self.serving = True
        for name in ("", "shuqiao.v1.Membership", "shuqiao.v1.Statistics", "shuqiao.v1.Ledger"):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        from node.jobs.queue import recover
        for job_id in recover(self.ctx):
            log.warning("job %s was running when the node stopped: marked failed", job_id)
        self.jobs.start()  # queued jobs resume
        if self.ctx.config.http.listen:
            from node.console.app import install as console
            from node.http.app import HttpServer
            self.http = HttpServer(self.ctx, grpc_serving=lambda: self.serving, extensions=[console])
            self.http_port = self.http.start()
        return self.port

    def apply_config(self, cfg) -> None:
        """After a reload (node/server/reload.py): who may call, and the HTTP API's tokens."""
        self.partners.allow((p.id for p in cfg.partners), (a.id for a in cfg.auditors))
        if self.http is not None:
            self.http.apply_config(cfg)

    def stop(self, grace: float = 5.0) -> None:
        self.serving = False  # load balancers see /readyz fail while calls drain
        self.health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.stop()
        self.jobs.stop()  # a running job ends failed, with the reason a restart would give
        self.server.stop(grace).wait()
        self.limits.close()
        self.ctx.close()


def maintenance(ctx: NodeContext, stop: threading.Event) -> None:
    """Periodic work while serving: due key rotations, witnessing partners' ledgers, and
    deleting batch jobs' files past their retention time."""
    import time
    from node.datasets.epochs import due, prune_expired, rotate
    from node.server.witnessing import report_status, witness_partners
    m = ctx.config.maintenance
    status = report_status(ctx, None)
    next_rotation = time.monotonic() + m.interval_seconds
    next_witness = time.monotonic() + min(m.witness_seconds, 5.0)
    next_expiry = time.monotonic()
    while not stop.wait(max(0.5, min(next_rotation, next_witness, next_expiry) - time.monotonic())):
        now, m = time.monotonic(), ctx.config.maintenance  # a reload may change the intervals
        try:
            if now >= next_expiry:
                next_expiry = now + ctx.config.service.retention_check_seconds
                from node.jobs.queue import expire
                for job_id in expire(ctx):
                    log.info("deleted the files of job %s (past its retention time)", job_id)
            if now >= next_rotation:
                next_rotation = now + m.interval_seconds
                for dataset, partner in due(ctx):
                    for r in rotate(ctx, dataset, partner):
                        log.info("rotated key of %s for %s to epoch %d", r.dataset, r.partner, r.epoch)
                for dataset, partner, epoch in prune_expired(ctx):
                    log.info("deleted the tables of %s for %s, key epoch %d (past its grace period)",
                             dataset, partner, epoch)
            if now >= next_witness:
                next_witness = now + m.witness_seconds
                witness_partners(ctx)
                status = report_status(ctx, status)
        except Exception as exc:  # keep serving; the next round retries
            from node.core.incidents import record
            record("a maintenance round", exc, log)  # type and code locations, never a message


class LedgerDamaged(StorageError):
    """The ledger check at start found an altered entry, node or head (one-line message)."""


def check_ledger(ctx: NodeContext, mode: str = "tail", accept_damage: bool = False) -> None:
    """Refuse to serve on top of an altered ledger, unless the operator accepts it.

    Accepting is itself ledgered (admin entry `damaged_ledger_accepted`), so the
    decision to keep appending to a damaged ledger is on the record.

    Raises:
        LedgerDamaged: the check failed and `accept_damage` is false.
    """
    from node.runtime.admin_log import record
    from node.ledger.canonical import clean_text
    from node.ledger.startcheck import check_at_start
    report = check_at_start(ctx.engine, ctx.ledger.signer.keyring, mode)  # any generation
    if report.ok:
        return
    first = report.problems[0] if report.problems else None
    more = len(report.problems) + report.unlisted - 1
    named = f"{first}" + (f" (and {more} more problem{'s' if more > 1 else ''})" if more > 0 else "")
    if not accept_damage:
        raise LedgerDamaged(f"the ledger is damaged: {named}; not serving on top of it. Inspect it "
                            "with `shuqiao audit check`; start anyway with --accept-damaged-ledger")
    log.warning("starting on a damaged ledger (accepted by the operator): %s", named)
    with ctx.engine.begin() as conn:
        record(ctx, conn, "damaged_ledger_accepted", "ledger", check=mode,
               problems=len(report.problems) + report.unlisted,
               first=clean_text(first.where if first else "ledger", 64), size=report.size)


def serve(ctx: NodeContext, port_file: Path | None = None, on_ready=None, *,
          check: str = "tail", accept_damaged_ledger: bool = False) -> None:
    """Run until SIGTERM/SIGINT. Writes the bound port to `port_file` once listening.

    The data directory is locked for the whole run (node/runtime/data_lock.py), before the
    database is opened, so a second `serve` of the same node stops without touching it.

    Raises:
        DataDirLocked: another process holds the data directory.
        LedgerDamaged: before anything is served or appended (see `check_ledger`).
    """
    from node.runtime.live_config import SERVE_HOLDER
    from node.server.reload import Reloader
    reloader = Reloader(ctx)
    reloader.install()  # before the lock names this process: SIGHUP must never end it
    with DataDirLock(ctx.config.data_dir, SERVE_HOLDER):
        _serve(ctx, port_file, on_ready, check, accept_damaged_ledger, reloader)


def listener_lines(node: NodeServer) -> list[str]:
    """One line per socket the node listens on, with the port actually bound."""
    cfg = node.ctx.config
    lines = [f"gRPC (mutual TLS: partners, auditors, health checking) on "
             f"{cfg.grpc.listen.rsplit(':', 1)[0]}:{node.port}"]
    if node.http is not None:
        scheme = "HTTPS" if cfg.http.tls else "HTTP (plain, no TLS)"
        lines.append(f"{scheme} API on {cfg.http.listen.rsplit(':', 1)[0]}:{node.http_port}: "
                     "/v1/ledger (auditor token), /metrics (metrics or auditor token), "
                     "/v1/admin (admin token), /v1/jobs (operator token), "
                     "/healthz and /readyz (no token)")
    return lines


def _serve(ctx: NodeContext, port_file: Path | None, on_ready, check: str,
           accept_damaged_ledger: bool, reloader) -> None:
    check_ledger(ctx, check, accept_damaged_ledger)
    node = NodeServer(ctx)
    port = node.start()
    log.info("node %s serving", ctx.config.node.id)
    for line in listener_lines(node):
        log.info("listening: %s", line)
    from node.server.witnessing import coverage_warnings
    for warning in coverage_warnings([ctx.config]):
        log.warning("witnessing: %s", warning)
    if port_file:
        from node.storage.schema import write_private
        tmp = port_file.with_suffix(".tmp")
        write_private(tmp, (str(port) + (f"\n{node.http_port}" if node.http is not None else "")).encode())
        os.replace(tmp, port_file)
    if on_ready:
        on_ready(port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=maintenance, args=(ctx, stop), name="maintenance", daemon=True)
    worker.start()
    reloader.on_applied.append(node.apply_config)
    threading.Thread(target=reloader.run, args=(stop,), name="reload", daemon=True).start()
    stop.wait()
    log.info("node %s stopping", ctx.config.node.id)
    node.stop()


def private_temp_dir(data_dir: Path) -> Path:
    """Temporary files of this process (the HTTP listener spools uploads over 1 MiB there)
    go to an owner-only folder of the data directory, never the shared /tmp; what a
    killed process left there is deleted first."""
    import shutil
    import tempfile
    from node.storage.schema import private_dir
    folder = data_dir / "tmp"
    shutil.rmtree(folder, ignore_errors=True)
    tempfile.tempdir = str(private_dir(folder))
    return folder

