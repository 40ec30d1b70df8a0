"""Witnessing: each node fetches its partners' signed tree heads, checks them, cosigns.

For every partner with an address, the node asks the partner to show its latest head
with a consistency proof from the last head this node cosigned (`ask_cosignature` asks
the partner to witness *our* head the same way). A partner that shows two histories —
the same size with another root, or a shrinking log — is recorded as a conflict with
both heads kept as evidence (node/ledger/witness.py), and logged loudly.
"""
from __future__ import annotations

import logging

from .context import NodeContext

log = logging.getLogger(__name__)


def witness_partners(ctx: NodeContext) -> dict[str, str]:
    """One witnessing round; returns partner -> "cosigned" | conflict kind | error."""
    from .asker import partner_channel
    from .ledger import pin_partner_key
    from .ledger.grpc_service import GrpcLogSource, ask_cosignature
    from .ledger.witness import Witness
    results: dict[str, str] = {}
    for partner in ctx.config.partners:
        if not partner.address:
            continue
        try:
            channel = partner_channel(ctx, partner.id)
            key = pin_partner_key(ctx.engine, partner.id, GrpcLogSource(channel, partner.id).public_key())
            answer = ask_cosignature(ctx.ledger, channel)
            if isinstance(answer, tuple):
                kind, _earlier = answer
                results[partner.id] = kind
                log.error("partner %s reports a ledger conflict (%s) with our history", partner.id, kind)
            else:
                Witness(ctx.ledger).store_cosignature(answer, key)
                results[partner.id] = "cosigned"
        except Exception as exc:  # an unreachable partner must not stop the round
            results[partner.id] = type(exc).__name__
            log.warning("witnessing %s failed: %s", partner.id, type(exc).__name__)
    return results
