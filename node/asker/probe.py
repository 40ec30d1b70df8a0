"""Whether a partner answers now: one listing with a short deadline, and its certificate.

The console's overview shows, for each partner this node can reach, whether it answers,
how fast, what it offers us, and when its TLS certificate expires. A probe is one
ListDatasets call (it changes nothing at the partner and is not retried: a partner that
does not answer within the deadline, connecting included, is shown as not answering, not
waited for) and, once it answered, one TLS handshake with this node's own identity for
the certificate — the partner serves gRPC only to federation members, so the handshake
presents our certificate like a query would, and is closed right after it.
"""
from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone

from cryptography import x509

from node.asker.offers import offer
from node.asker.streams import call
from node.core.config import ConfigError
from node.core.errors import PartnerError
from node.keys.pki import target_name, tls_key_passphrase
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.context import NodeContext
from node.transport.channels import open_channel

DEADLINE = 2.0  # seconds: a partner slower than this is shown as not answering


@dataclass
class Probe:
    """What one probe of a partner found."""
    partner: str
    answers: bool
    checked_at: datetime
    latency_ms: float | None = None
    error: str | None = None          # why it did not answer, in words an operator can act on
    offers: list[dict] = field(default_factory=list)  # node/asker/offers.offer() of each dataset
    cert_not_after: datetime | None = None  # the partner's TLS certificate's end of validity


def probe(ctx: NodeContext, partner: str, deadline: float = DEADLINE) -> Probe:
    """Ask `partner` for its listing within `deadline` seconds and read its certificate."""
    now = ctx.clock.now()
    found = Probe(partner, False, now)
    started = time.monotonic()
    try:
        channel = ctx.channels.get(partner)
        if channel is None:  # opened here with the short deadline, then kept like any other
            opened = open_channel(ctx, partner, timeout=deadline)
            channel = ctx.channels.setdefault(partner, opened)
            if channel is not opened:
                opened.close()
        stub = pb_grpc.MembershipStub(channel)
        left = max(0.2, deadline - (time.monotonic() - started))  # one deadline for both steps
        listing = call(partner, stub.ListDatasets, pb.ListDatasetsRequest(), left)
    except (PartnerError, ConfigError) as exc:
        found.error = str(exc)
        return found
    found.answers = True
    found.latency_ms = (time.monotonic() - started) * 1000
    found.offers = [offer(info) for info in listing.datasets]
    try:  # only once it answered: a partner that is down costs one deadline, not two
        found.cert_not_after = peer_certificate_expiry(ctx, partner, deadline)
    except (OSError, ssl.SSLError, ValueError, ConfigError):
        pass  # it answered; its certificate's end is then simply not shown
    return found


def peer_certificate_expiry(ctx: NodeContext, partner: str, timeout: float) -> datetime | None:
    """The end of validity of the certificate `partner` presents at its gRPC address (None:
    no address). The handshake is mutual, with this node's certificate, and verified
    against the federation CA and the partner's name.

    Raises:
        OSError, ssl.SSLError: the partner cannot be reached or the handshake fails.
    """
    cfg = ctx.config
    address = cfg.partner(partner).address
    if not address:
        return None
    host, port = address.rsplit(":", 1)
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    tls.load_verify_locations(cafile=str(cfg.path(cfg.tls.ca)))
    password = tls_key_passphrase(ctx.kek).expose() if cfg.tls.key_sealed else None
    tls.load_cert_chain(str(cfg.path(cfg.tls.cert)), str(cfg.path(cfg.tls.key)), password=password)
    tls.set_alpn_protocols(["h2"])
    with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout) as raw:
        with tls.wrap_socket(raw, server_hostname=target_name(partner)) as conn:
            der = conn.getpeercert(binary_form=True)
    return x509.load_der_x509_certificate(der).not_valid_after_utc.astimezone(timezone.utc) if der else None


__all__ = ["DEADLINE", "Probe", "peer_certificate_expiry", "probe"]
