"""Admin actions in the ledger: registrations, retirements, key epochs, policy changes.

Each entry is appended on the same transaction as the action it records, so the ledger
never shows an action that did not happen, nor misses one that did. Details hold names,
versions, counts and digests only.
"""
from __future__ import annotations

import getpass
import hashlib
import json

from sqlalchemy import Connection, insert, select, update

from node.runtime.context import NodeContext
from node.storage.schema import node_state


def actor() -> str:
    """Who acted: the operating-system account running the command (or "cli")."""
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        name = "cli"
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)[:64] or "cli"


def record(ctx: NodeContext, conn: Connection, action: str, subject: str, **details) -> None:
    from node.ledger import AdminEntry
    ctx.ledger.append(conn, AdminEntry(action, subject, actor(), ctx.ledger.now(),
                                       {k: v for k, v in details.items() if v is not None}))


def policy_digest(ctx: NodeContext) -> str:
    """SHA-256 over the canonical JSON of the partners and every dataset policy."""
    cfg = ctx.config
    body = {"partners": [p.model_dump(mode="json") for p in cfg.partners],
            "datasets": [d.model_dump(mode="json") for d in cfg.datasets]}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False,
                                     separators=(",", ":")).encode()).hexdigest()


def record_policy_if_changed(ctx: NodeContext) -> bool:
    """At start: ledger the partner list and policy when they differ from the last recorded."""
    digest = policy_digest(ctx)
    ledger = ctx.ledger  # before the write transaction (it may create its key)
    with ctx.engine.begin() as conn:
        last = conn.execute(select(node_state.c.value).where(node_state.c.name == "policy_digest")).scalar()
        if last == digest:
            return False
        record(ctx, conn, "policy_changed", "node", digest=digest,
               partners=len(ctx.config.partners), datasets=len(ctx.config.datasets))
        if last is None:
            conn.execute(insert(node_state).values(name="policy_digest", value=digest))
        else:
            conn.execute(update(node_state).where(node_state.c.name == "policy_digest").values(value=digest))
    return True
