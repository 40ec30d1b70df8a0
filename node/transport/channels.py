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

CONNECT_TIMEOUT = 10.0


def grpc_options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def partner_channel(ctx: NodeContext, partner_id: str) -> grpc.Channel:
    """The context's open channel to a partner (created and checked on first use)."""
    channel = ctx.channels.get(partner_id)
    if channel is None:
        channel = ctx.channels[partner_id] = open_channel(ctx, partner_id)
    return channel


def open_channel(ctx: NodeContext, partner_id: str, *, timeout: float = CONNECT_TIMEOUT) -> grpc.Channel:
    """A mutual-TLS channel to a configured partner, checked to be up."""
    cfg = ctx.config
    partner = cfg.partner(partner_id)
    if not partner.address:
        raise ConfigError(f"partner {partner_id!r} has no address in the config; add address = \"HOST:PORT\"")
    tls = cfg.tls
    cert, key = load_tls_identity(cfg.path(tls.cert), cfg.path(tls.key),
                                  kek=ctx.kek if tls.key_sealed else None)
    creds = grpc.ssl_channel_credentials(root_certificates=cfg.path(tls.ca).read_bytes(),
                                         private_key=key.expose(), certificate_chain=cert)
    options = grpc_options(cfg.grpc.max_message_bytes) + [
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
