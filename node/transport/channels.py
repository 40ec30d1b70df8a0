"""Channels to partners: mutual TLS with this node's identity, gRPC options shared by client and server.

A context keeps one open channel per partner for the life of the process
(`partner_channel`); `open_channel` makes a new one and waits until it is up, so an
unreachable partner fails fast with a message an operator can act on.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from node.core.config import ConfigError
from node.core.errors import PartnerError
from node.keys.pki import load_tls_identity, target_name

if TYPE_CHECKING:
    from node.runtime.context import NodeContext

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
    """The context's open channel to a partner (created and checked on first use)."""
    channel = ctx.channels.get(partner_id)
    if channel is None:
        channel = ctx.channels[partner_id] = open_channel(ctx, partner_id)
    return channel


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
