"""Who is calling: the peer's node id from its mTLS certificate, checked in one place.

The TLS handshake already refuses certificates from any CA but the federation's. This
interceptor then maps the certificate's SAN to a node id and refuses a node that is
not a configured partner (PERMISSION_DENIED), before any handler runs. Handlers read
the authenticated id with `peer_node_id(context)`.
"""
from __future__ import annotations

import logging

import grpc

from node.core.errors import NotPermitted, Unauthenticated
from node.keys.pki import node_id_from_san
from node.transport.status import abort_for

log = logging.getLogger(__name__)

_OPEN_METHODS = frozenset({"/grpc.health.v1.Health/Check", "/grpc.health.v1.Health/Watch"})


def peer_node_id(context: grpc.ServicerContext) -> str | None:
    auth = context.auth_context() or {}
    return node_id_from_san(auth.get("x509_subject_alternative_name", []))


_READ_ONLY = ("/shuqiao.v1.Ledger/Get",)  # ledger reads: open to configured auditors too


def _wrap(behavior, allowed: frozenset[str], method: str):
    def guarded(request_or_iterator, context):
        peer = peer_node_id(context)
        if peer is None:
            log.warning("refused call to %s: certificate names no Shuqiao node", method)
            abort_for(context, Unauthenticated("client certificate names no Shuqiao node"))
        if peer not in allowed:
            log.warning("refused call to %s from node %s: not a configured partner", method, peer)
            abort_for(context, NotPermitted(
                f"node {peer!r} is not a partner of this node (or may not call {method})"))
        return behavior(request_or_iterator, context)
    return guarded


class PartnerInterceptor(grpc.ServerInterceptor):
    """Admit only configured partners (health checks are open to any federation member)."""

    def __init__(self, partner_ids, auditor_ids=()) -> None:
        self.allow(partner_ids, auditor_ids)

    def allow(self, partner_ids, auditor_ids=()) -> None:
        """Replace who may call (a config reload); calls already admitted run on."""
        allowed = frozenset(partner_ids)
        # One assignment each, read once per call below: a call sees one list or the other.
        self._readers = allowed | frozenset(auditor_ids)
        self._allowed = allowed

    def intercept_service(self, continuation, handler_call_details):
        handler = continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method in _OPEN_METHODS:
            return handler
        kinds = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for attr, factory in kinds.items():
            behavior = getattr(handler, attr)
            if behavior is not None:
                allowed = self._readers if method.startswith(_READ_ONLY) else self._allowed
                return factory(_wrap(behavior, allowed, method),
                               request_deserializer=handler.request_deserializer,
                               response_serializer=handler.response_serializer)
        return handler
