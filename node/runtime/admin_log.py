"""Admin actions in the ledger: registrations, retirements, key epochs, policy changes.

Each entry is appended on the same transaction as the action it records, so the ledger
never shows an action that did not happen, nor misses one that did. Details hold names,
versions, counts and digests only.
"""
from __future__ import annotations

import getpass
import hashlib
import json
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Iterator

from sqlalchemy import Connection, insert, select, update

from node.core.config import NodeConfig
from node.runtime.context import NodeContext
from node.storage.schema import node_state


# Who acts in this thread when it is not the OS account: a console user (`acting_as`).
_ACTING: ContextVar[str | None] = ContextVar("shuqiao_actor", default=None)


def _clean_actor(name: str) -> str:
    return "".join(c if (c.isascii() and c.isalnum()) or c in "._-:" else "_" for c in name)[:64]


def actor() -> str:
    """Who acted: the console user acting in this thread (`acting_as`), else the
    operating-system account running the command (or "cli")."""
    acting = _ACTING.get()
    if acting:
        return acting
    try:
        name = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        name = "cli"
    return _clean_actor(name).replace(":", "_") or "cli"


@contextmanager
def acting_as(name: str | None) -> Iterator[None]:
    """Ledger the admin actions of this thread (and of what it calls) as `name`, e.g.
    "console:<token name>"; None keeps the default (the OS account)."""
    token = _ACTING.set(_clean_actor(name) or None if name else None)
    try:
        yield
    finally:
        _ACTING.reset(token)


def record(ctx: NodeContext, conn: Connection, action: str, subject: str, **details) -> None:
    from node.ledger import AdminEntry
    ctx.ledger.append(conn, AdminEntry(action, subject, actor(), ctx.ledger.now(),
                                       {k: v for k, v in details.items() if v is not None}))


def policy_body(config: NodeConfig) -> dict:
    """The policy a node enforces: its partners and every dataset with its grants."""
    return {"partners": [p.model_dump(mode="json") for p in config.partners],
            "datasets": [d.model_dump(mode="json") for d in config.datasets]}


def _canonical(body: dict) -> bytes:
    return json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":")).encode()


def policy_digest(ctx_or_config: NodeContext | NodeConfig) -> str:
    """SHA-256 over the canonical JSON of the partners and every dataset policy."""
    config = getattr(ctx_or_config, "config", ctx_or_config)
    return hashlib.sha256(_canonical(policy_body(config))).hexdigest()


def config_digest(config: NodeConfig) -> str:
    """SHA-256 over the canonical JSON of the whole config (what a reload compares)."""
    return hashlib.sha256(_canonical(config.model_dump(mode="json"))).hexdigest()


def _set_state(conn: Connection, name: str, value: str, last: str | None) -> None:
    if last is None:
        conn.execute(insert(node_state).values(name=name, value=value))
    elif last != value:
        conn.execute(update(node_state).where(node_state.c.name == name).values(value=value))


def enforced_policy(conn: Connection) -> tuple[str | None, dict | None]:
    """The digest and body of the policy last recorded as enforced (at start or reload);
    (None, None) before the first start. The body is None if recorded by an older node."""
    rows = dict(conn.execute(select(node_state.c.name, node_state.c.value).where(
        node_state.c.name.in_(("policy_digest", "policy_body")))).all())
    body = rows.get("policy_body")
    return rows.get("policy_digest"), json.loads(body) if body else None


def record_policy_if_changed(ctx: NodeContext, config: NodeConfig | None = None, *,
                             always: bool = False, **details) -> bool:
    """Ledger the partner list and policy of `config` (default: the context's) when they
    differ from the last recorded, or whenever `always` (a reload that changed other
    settings); keep them as the enforced policy. At start, and on every applied reload,
    in the caller's order: recorded first, then enforced."""
    config = config or ctx.config
    digest, body = policy_digest(config), json.dumps(policy_body(config), ensure_ascii=False)
    ledger = ctx.ledger  # before the write transaction (it may create its key)
    with ctx.engine.begin() as conn:
        stored = dict(conn.execute(select(node_state.c.name, node_state.c.value).where(
            node_state.c.name.in_(("policy_digest", "policy_body")))).all())
        last = stored.get("policy_digest")
        _set_state(conn, "policy_body", body, stored.get("policy_body"))
        if last == digest and not always:
            return False
        record(ctx, conn, "policy_changed", "node", digest=digest,
               partners=len(config.partners), datasets=len(config.datasets), **details)
        _set_state(conn, "policy_digest", digest, last)
    return True
