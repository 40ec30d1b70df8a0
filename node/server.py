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

from .answerer import MembershipAnswerer
from .auth import PartnerInterceptor
from .context import NodeContext
from .pki import load_tls_identity
from .rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


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
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16, thread_name_prefix="grpc"),
            interceptors=[PartnerInterceptor(p.id for p in cfg.partners)],
            options=grpc_options(cfg.grpc.max_message_bytes),
            maximum_concurrent_rpcs=64)
        pb_grpc.add_MembershipServicer_to_server(MembershipAnswerer(ctx), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self.port: int | None = None

    def start(self) -> int:
        self.ctx.engine  # schema ready before the first call
        self.ctx.pool.warm()
        self.port = self.server.add_secure_port(self.ctx.config.grpc.listen,
                                                server_credentials(self.ctx))
        if not self.port:
            raise OSError(f"cannot listen on {self.ctx.config.grpc.listen}")
        self.server.start()
        for name in ("", "shuqiao.v1.Membership"):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        return self.port

    def stop(self, grace: float = 5.0) -> None:
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
        self.ctx.close()


def maintenance(ctx: NodeContext, stop: threading.Event) -> None:
    """Periodic work while serving: key epochs that are due are rotated."""
    from .epochs import due, rotate
    while not stop.wait(ctx.config.maintenance.interval_seconds):
        try:
            for dataset, partner in due(ctx):
                for r in rotate(ctx, dataset, partner):
                    log.info("rotated key of %s for %s to epoch %d", r.dataset, r.partner, r.epoch)
        except Exception:  # keep serving; the next round retries
            log.exception("maintenance round failed")


def serve(ctx: NodeContext, port_file: Path | None = None, on_ready=None) -> None:
    """Run until SIGTERM/SIGINT. Writes the bound port to `port_file` once listening."""
    node = NodeServer(ctx)
    port = node.start()
    host = ctx.config.grpc.listen.rsplit(":", 1)[0]
    log.info("node %s listening on %s:%d (mTLS)", ctx.config.node.id, host, port)
    if port_file:
        tmp = port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, port_file)
    if on_ready:
        on_ready(port)
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    worker = threading.Thread(target=maintenance, args=(ctx, stop), name="maintenance", daemon=True)
    worker.start()
    stop.wait()
    log.info("node %s stopping", ctx.config.node.id)
    node.stop()
