"""Channels to partners: mutual TLS with this node's identity, gRPC options shared by client and
server, and retrying a call over them that failed for a passing reason.

A context keeps one open channel per partner for the life of the process
(`partner_channel`); `open_channel` makes a new one and waits until it is up, so an
unreachable partner fails fast with a message an operator can act on.

Retries are bounded, jittered, and for idempotent calls only. Only UNAVAILABLE (the
partner restarts, the connection dropped, nobody listens yet) and DEADLINE_EXCEEDED
are retried: a refusal or an internal error would only come back.
Only calls that change nothing at the partner when repeated are retried: dataset
listings (node/asker/streams.py) and witnessing rounds (node/server/witnessing.py:
the partner cosigns the same head again with the same answer, and notes already
exchanged are not stored twice). A query stream never is: once its header may have
been admitted, the partner has claimed the query id and reserved quota, and a second
attempt would be a second query -- the operator decides to ask again.

The delays grow as first, 2 x first, 4 x first ... up to `cap`, each drawn from its
upper half at random ("equal jitter"), so the nodes of a federation that lost the same
partner do not all come back at the same instant, and a partner that is restarting
still gets a few seconds. Randomness and sleeping are parameters, for the tests.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import grpc

from node.core.config import ConfigError
from node.core.errors import PartnerError
from node.keys.pki import load_tls_identity, target_name

if TYPE_CHECKING:
    from node.runtime.context import NodeContext

log = logging.getLogger(__name__)
T = TypeVar("T")
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


def grpc_options(max_message_bytes: int, keepalive_seconds: float = 60.0, *,
                 server: bool = False) -> list[tuple[str, int]]:
    """Options of a partner channel (client) or of the node's server, matched to each other.

    A channel to a partner stays open for the life of the process, mostly idle between
    witnessing rounds and queries, so it pings every `keepalive_seconds` with or without
    calls (a dead partner or a dropped NAT mapping is noticed before the next query).
    A gRPC server, by default, takes pings without calls more often than every five
    minutes as abuse, and after three answers GOAWAY "too_many_pings" (logged as an error
    by the client). So the server here permits pings without calls at half the
    interval (a ping may come early by the timer's slack) and keeps the default
    strike limit for a peer that pings faster still.
    """
    ping_ms = max(1, int(keepalive_seconds * 1000))
    options = [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", ping_ms),
        ("grpc.keepalive_permit_without_calls", 1),
    ]
    if server:
        return options + [("grpc.http2.min_ping_interval_without_data_ms", max(1, ping_ms // 2))]
    # Keep pinging while idle (the default stops after two pings without data).
    return options + [("grpc.http2.max_pings_without_data", 0)]


def partner_channel(ctx: NodeContext, partner_id: str) -> grpc.Channel:
    """The context's open channel to a partner (created and checked on first use).

    Several threads (the HTTP API's real-time checks) may ask for it at once: one of them
    opens it while the others wait, so no second channel is opened and left behind; a
    partner being reached never holds up the channels to the others."""
    channel = ctx.channels.get(partner_id)
    if channel is None:
        with _OPENING_GUARD:
            opening = _OPENING.setdefault((id(ctx.channels), partner_id), threading.Lock())
        with opening:
            channel = ctx.channels.get(partner_id)
            if channel is None:
                channel = ctx.channels[partner_id] = open_channel(ctx, partner_id)
    return channel


_OPENING_GUARD = threading.Lock()
_OPENING: dict[tuple[int, str], threading.Lock] = {}  # (a context's channel map, partner) -> its lock


def open_channel(ctx: NodeContext, partner_id: str, *, timeout: float | None = None) -> grpc.Channel:
    """A mutual-TLS channel to a configured partner, checked to be up within `timeout`
    seconds (default `[grpc] connect_seconds`)."""
    cfg = ctx.config
    timeout = cfg.grpc.connect_seconds if timeout is None else timeout
    partner = cfg.partner(partner_id)
    if not partner.address:
        raise ConfigError(f"partner {partner_id!r} has no address in the config; add address = \"HOST:PORT\"")
    tls = cfg.tls
    cert, key = load_tls_identity(cfg.path(tls.cert), cfg.path(tls.key),
                                  kek=ctx.kek if tls.key_sealed else None)
    creds = grpc.ssl_channel_credentials(root_certificates=cfg.path(tls.ca).read_bytes(),
                                         private_key=key.expose(), certificate_chain=cert)
    options = grpc_options(cfg.grpc.max_message_bytes, cfg.grpc.keepalive_seconds) + [
        ("grpc.ssl_target_name_override", target_name(partner_id))]
    channel = grpc.secure_channel(partner.address, creds, options=options)
    try:
        grpc.channel_ready_future(channel).result(timeout=timeout)
    except grpc.FutureTimeoutError:
        channel.close()
        raise PartnerError(partner_id, f"unreachable at {partner.address}: no mutual-TLS connection "
                           f"within {timeout:g} s (is the node running, and do both nodes use the "
                           "same federation CA?)", grpc.StatusCode.UNAVAILABLE) from None
    return channel


# -- retrying idempotent calls ----------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    attempts: int = 4    # calls in all, the first one included
    first: float = 1.0   # seconds: the first delay lies in [first / 2, first]
    cap: float = 8.0     # no delay longer than this

    def delay(self, retry: int, rng: random.Random) -> float:
        """The pause before retry number `retry` (0 for the first retry)."""
        bound = min(self.cap, self.first * 2 ** retry)
        return bound / 2 + rng.uniform(0.0, bound / 2)


def transient(exc: BaseException) -> bool:
    """Whether `exc` is a failure worth another attempt: a gRPC error, or a node error
    carrying the partner's status (PartnerError, a ledger SourceError), of RETRYABLE."""
    code = exc.code() if isinstance(exc, grpc.RpcError) else getattr(exc, "code", None)
    return code in RETRYABLE


def retrying(call: Callable[[], T], *, what: str, backoff: Backoff = Backoff(),
             rng: random.Random | None = None, sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, again after a pause while it fails transiently, at most `backoff.attempts`
    times; the last failure (or any other one) propagates unchanged."""
    rng = rng or random.Random()
    for retry in range(backoff.attempts - 1):
        try:
            return call()
        except Exception as exc:
            if not transient(exc):
                raise
            pause = backoff.delay(retry, rng)
            log.info("%s failed transiently (%s); attempt %d of %d in %.1f s", what,
                     type(exc).__name__, retry + 2, backoff.attempts, pause)
            sleep(pause)
    return call()
