"""Partners' probes for the console, kept ~30 s in the context so a page never waits long.

A page asks for the status of every partner it can reach. A probe younger than
`FRESH_SECONDS` is used as it is; an older one (or none) starts a new probe on a thread
of its own, one per partner at a time, and the page waits at most `WAIT_SECONDS` for
those: a partner that takes longer is shown with its previous probe, or as being checked.
"""
from __future__ import annotations

import logging
import threading
import time

from node.asker.offers import askable_partners
from node.asker.probe import Probe, probe
from node.runtime.context import NodeContext

FRESH_SECONDS = 30.0
WAIT_SECONDS = 2.5
log = logging.getLogger(__name__)


def _refresh(ctx: NodeContext, partner: str) -> None:
    try:
        found = probe(ctx, partner)
        ctx.caches.partner_probes.put(partner, (time.monotonic(), found))
    except Exception:  # noqa: BLE001 - a probe that breaks must not take the page down
        log.exception("probing partner %s failed", partner)
    finally:
        ctx.caches.preparing.release(("probe", partner))


def partner_probes(ctx: NodeContext, *, wait: float = WAIT_SECONDS,
                   fresh: float = FRESH_SECONDS) -> dict[str, Probe | None]:
    """The latest probe of each partner this node can reach (None: none finished yet)."""
    partners = askable_partners(ctx)
    started: list[threading.Thread] = []
    for partner in partners:
        cached = ctx.caches.partner_probes.get(partner)
        if cached is not None and time.monotonic() - cached[0] < fresh:
            continue
        if ctx.caches.preparing.claim(("probe", partner)):
            thread = threading.Thread(target=_refresh, args=(ctx, partner), daemon=True,
                                      name=f"probe-{partner}")
            thread.start()
            started.append(thread)
    deadline = time.monotonic() + wait
    for thread in started:
        thread.join(max(0.0, deadline - time.monotonic()))
    out: dict[str, Probe | None] = {}
    for partner in partners:
        cached = ctx.caches.partner_probes.get(partner)
        out[partner] = cached[1] if cached else None
    return out


def offers_of(ctx: NodeContext, partner: str) -> list[dict]:
    """What `partner` offers this node, from its latest probe (empty if it did not answer)."""
    found = partner_probes(ctx).get(partner)
    return found.offers if found and found.answers else []
