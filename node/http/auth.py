"""Who is calling the HTTP listener, and what they may do: tokens, sessions, roles, scopes, rates.

A caller is a `Principal`: the name of the token it holds (never the token), the token's
role and its scopes (the purposes an operator may state, the rules it may run). Business
systems send `Authorization: Bearer <token>`; people log in to the console with the same
token and then carry a session cookie (HttpOnly, Secure, SameSite=Strict) whose digest
the node keeps. Every route says which roles it admits with `auth.require(...)`; the
console's pages and the API's endpoints use the same dependency, so a page never opens
what the API would refuse.

Tokens are compared as SHA-256 digests in constant time, against every configured digest
(no early exit). The tokens in force are read from the context on every request, so a
reload that revokes a token ends its sessions too. A state-changing request carried by a
session cookie must also carry the session's CSRF token (a form field `csrf` or the
header `X-CSRF-Token`): an HMAC of the session secret, so nothing extra is stored. Each
token has a rate (requests per minute, a token bucket); beyond it: 429 with Retry-After.
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from datetime import timedelta

from fastapi import HTTPException, Request
from sqlalchemy import delete, insert, select, update

from node.core.service_config import Role, TokenEntry
from node.ledger.http import bearer_token, hash_token
from node.runtime.context import NodeContext
from node.storage.schema import console_sessions

SESSION_COOKIE = "sq_session"
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A session's last use is written at most this often (every request would wait for any
# long write transaction, such as a dataset registration, on SQLite).
TOUCH_EVERY = timedelta(seconds=60)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller: a token's name, role and scopes (None: any)."""
    name: str
    role: Role
    purposes: frozenset[str] | None = None
    rules: frozenset[str] | None = None
    session: bool = False  # came with a console session cookie, not a bearer token

    def may_state(self, purpose: str) -> bool:
        return self.purposes is None or purpose in self.purposes

    def may_run(self, rule: str) -> bool:
        return self.rules is None or rule in self.rules


@dataclass(frozen=True)
class _Holder:
    digest: bytes
    principal: Principal
    per_minute: int


def _holders(ctx: NodeContext) -> list[_Holder]:
    """Every token in force: `[[http.tokens]]`, and the role lists kept for older configs."""
    http = ctx.config.http
    out = [_Holder(t.digest.encode(), _principal(t), t.requests_per_minute) for t in http.tokens]
    for role, digests in ((Role.AUDITOR, http.auditor_tokens), (Role.ADMIN, http.admin_tokens),
                          (Role.METRICS, http.metrics_tokens)):
        # Named by a prefix of the digest: enough to tell holders apart, useless to guess a token.
        out += [_Holder(d.encode(), Principal(f"{role.value}-{d[7:15]}", role), 600) for d in digests]
    return out


def _principal(t: TokenEntry) -> Principal:
    return Principal(t.name, t.role, frozenset(t.purposes) or None, frozenset(t.rules) or None)


class RateLimiter:
    """A token bucket per principal name: `per_minute` requests in a burst, refilled evenly."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buckets: dict[str, tuple[float, float]] = {}  # name -> (tokens, monotonic time)

    def take(self, name: str, per_minute: int) -> float:
        """0.0 if a request may go now, else the seconds until one may."""
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(name, (float(per_minute), now))
            tokens = min(float(per_minute), tokens + (now - then) * per_minute / 60.0)
            if tokens >= 1.0:
                self._buckets[name] = (tokens - 1.0, now)
                return 0.0
            self._buckets[name] = (tokens, now)
            return (1.0 - tokens) * 60.0 / per_minute


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(status_code=401, detail=detail, headers={"WWW-Authenticate": "Bearer"})


class Authenticator:
    """Resolves a request to a Principal and enforces roles, CSRF and rates (one per app)."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.rates = RateLimiter()

    # -- tokens ---------------------------------------------------------------------------

    def by_token(self, token: str | None) -> tuple[Principal, int] | None:
        """The holder of `token` and its rate, comparing against every digest in constant time."""
        presented = hash_token(token).encode() if token else b""
        found = None
        for holder in _holders(self.ctx):  # no early exit
            if hmac.compare_digest(presented, holder.digest) and found is None:
                found = (holder.principal, holder.per_minute)
        return found if token else None

    def by_name(self, name: str) -> tuple[Principal, int] | None:
        return next(((h.principal, h.per_minute) for h in _holders(self.ctx) if h.principal.name == name), None)

    # -- sessions ---------------------------------------------------------------------------

    def open_session(self, principal: Principal) -> str:
        """A new session for `principal`; returns the cookie value (kept only as a digest)."""
        secret = secrets.token_urlsafe(32)
        now, svc = self.ctx.clock.now(), self.ctx.config.service
        with self.ctx.engine.begin() as conn:
            conn.execute(delete(console_sessions).where(console_sessions.c.expires_at < now))
            conn.execute(insert(console_sessions).values(
                digest=_session_digest(secret), token_name=principal.name, created_at=now,
                expires_at=now + timedelta(minutes=svc.session_minutes), seen_at=now))
        return secret

    def close_session(self, secret: str | None) -> None:
        if secret:
            with self.ctx.engine.begin() as conn:
                conn.execute(delete(console_sessions).where(console_sessions.c.digest == _session_digest(secret)))

    def by_session(self, secret: str | None) -> tuple[Principal, int] | None:
        """The principal of a live session (not expired, not idle too long, token still in force)."""
        if not secret:
            return None
        digest, now = _session_digest(secret), self.ctx.clock.now()
        idle = timedelta(minutes=self.ctx.config.service.session_idle_minutes)
        with self.ctx.engine.connect() as conn:  # a read: never waits for a long write (a registration)
            row = conn.execute(select(console_sessions).where(console_sessions.c.digest == digest)).first()
        if row is None:
            return None
        if _aware(row.expires_at) <= now or _aware(row.seen_at) + idle <= now:
            self.close_session(secret)
            return None
        if _aware(row.seen_at) + min(TOUCH_EVERY, idle / 4) <= now:  # written now and then, not per request
            with self.ctx.engine.begin() as conn:
                conn.execute(update(console_sessions).where(console_sessions.c.digest == digest).values(seen_at=now))
        found = self.by_name(row.token_name)
        if found is None:  # the token was revoked: its sessions end with it
            self.close_session(secret)
            return None
        principal, rate = found
        return Principal(principal.name, principal.role, principal.purposes, principal.rules, session=True), rate

    # -- the dependency ---------------------------------------------------------------------

    def require(self, *roles: Role):
        """A FastAPI dependency admitting `roles` only; it returns the caller's Principal."""
        allowed = frozenset(roles)

        async def dependency(request: Request) -> Principal:
            principal, rate = await self.authenticate(request)
            if principal.role not in allowed:
                raise HTTPException(status_code=403, detail=(
                    f"the {principal.role.value} role may not do this "
                    f"(needs: {', '.join(sorted(r.value for r in allowed))})"))
            wait = self.rates.take(principal.name, rate)
            if wait:
                raise HTTPException(status_code=429, detail="too many requests for this token; retry later",
                                    headers={"Retry-After": str(max(1, round(wait + 0.5)))})
            return principal

        return dependency

    async def authenticate(self, request: Request) -> tuple[Principal, int]:
        header = request.headers.get("authorization")
        if header is not None:
            found = self.by_token(bearer_token(header))
            if found is None:
                raise _unauthorised("the bearer token is not valid (Authorization: Bearer <token>)")
            return found
        secret = request.cookies.get(SESSION_COOKIE)
        found = self.by_session(secret)
        if found is None:
            raise _unauthorised("log in first, or send a token (Authorization: Bearer <token>)")
        if request.method in UNSAFE_METHODS and not await _csrf_ok(request, secret):
            raise HTTPException(status_code=403, detail="the form has expired or did not come from "
                                "this console; reload the page and try again")
        return found


def csrf_token(secret: str) -> str:
    """The CSRF token of a session: an HMAC of its secret, so nothing more is stored."""
    return hmac.new(secret.encode(), b"shuqiao console csrf v1", hashlib.sha256).hexdigest()


async def _csrf_ok(request: Request, secret: str) -> bool:
    presented = request.headers.get("x-csrf-token")
    if presented is None:
        content_type = request.headers.get("content-type", "")
        if content_type.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            form = await request.form()  # cached by Starlette: the endpoint reads the same form
            value = form.get("csrf")
            presented = value if isinstance(value, str) else None
    return presented is not None and hmac.compare_digest(presented.encode(), csrf_token(secret).encode())


def _session_digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _aware(moment):
    """SQLite returns naive datetimes for timezone-aware columns: they are UTC."""
    from datetime import timezone
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
