"""Unexpected failures become incidents: one opaque answer outside, the details only here.

A partner, an auditor or a user who meets a bug, a damaged database or a full disk gets
one answer that says nothing about the node's internals — gRPC INTERNAL or HTTP 500 with
"internal error; incident <id>" — and the node's log gets the same incident id with what
an operator needs to find the fault.

The log line must not become a leak of its own: exception messages can carry personal
data (SQLAlchemy puts the SQL and its bound parameters into its messages, a parser may
quote the cell it choked on). So an incident is logged as the exception's type and the
code locations of its traceback (file, line, function) — for every exception in the
chain — never its message or arguments.

Deliberate refusals pass through untouched: a handler that raised a Refusal had it
turned into its status (node/transport/status.py, which calls `context.abort`), or
called `context.abort(code, ...)` itself; either way a status is set, and that status is
what the peer gets. So does a peer that went away (its cancelled stream raises inside
the handler; there is no one left to tell). The gRPC side is an interceptor with the
server's others (node/transport/identity.py); the HTTP side, the middleware below.
"""
from __future__ import annotations

import logging
import re
import secrets
import traceback

log = logging.getLogger("shuqiao.incidents")

__all__ = ["IncidentMiddleware", "describe", "new_incident_id", "opaque_message", "record"]


def new_incident_id() -> str:
    """A random id that names one incident in the log and in the answer; it encodes nothing."""
    return secrets.token_hex(6)


def opaque_message(incident: str) -> str:
    return f"internal error; incident {incident}"


_FRAMES = 12        # innermost frames shown for the exception itself
_CAUSE_FRAMES = 3   # and for each exception in its chain


def _short(filename: str) -> str:
    """A code location without the machine's directories: 'sqlalchemy/engine/base.py'."""
    path = filename.replace("\\", "/")
    if "/site-packages/" in path:
        return path.split("/site-packages/", 1)[1]
    stdlib = re.match(r".*/lib/python3\.\d+/(.*)", path)
    if stdlib:
        return stdlib.group(1)
    return "/".join(path.split("/")[-2:])


def describe(exc: BaseException) -> str:
    """The exception chain as types and code locations only: no messages, no arguments."""
    parts: list[str] = []
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        kind = type(current)
        frames = traceback.extract_tb(current.__traceback__)
        shown = list(reversed(frames))[:_CAUSE_FRAMES if parts else _FRAMES]
        where = " <- ".join(f"{_short(f.filename)}:{f.lineno} {f.name}" for f in shown)
        parts.append(f"{kind.__module__}.{kind.__qualname__} at {where or '(no frames)'}")
        current = current.__cause__ or current.__context__
    return "; caused by ".join(parts)


def record(where: str, exc: BaseException, logger: logging.Logger | None = None) -> str:
    """Log `exc` as a new incident at `where` (a method or route name); return its id."""
    incident = new_incident_id()
    (logger or log).error("incident %s in %s: %s", incident, where, describe(exc),
                          extra={"incident": incident})
    return incident


# -- HTTP (ASGI) --------------------------------------------------------------------------

class WatchedSend:
    """An ASGI `send` that remembers whether the response has started: a middleware that
    fails after that can no longer answer with a status of its own."""

    def __init__(self, send) -> None:
        self.send, self.started = send, False

    async def __call__(self, message) -> None:
        if message["type"] == "http.response.start":
            self.started = True
        await self.send(message)


class IncidentMiddleware:
    """ASGI middleware: an unhandled exception -> 500 {"detail": "internal error; incident <id>"}.

    It sits inside Starlette's error middleware and swallows the exception, so neither
    the client nor the server's own error log sees the traceback or the message.
    """

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        watched = WatchedSend(send)
        try:
            await self.app(scope, receive, watched)
        except Exception as exc:
            incident = record(f"{scope.get('method', '?')} {scope.get('path', '?')}", exc)
            if watched.started:  # a streamed body broke off; the client sees a truncated response
                return
            import json
            body = json.dumps({"detail": opaque_message(incident), "incident": incident}).encode()
            await send({"type": "http.response.start", "status": 500,
                        "headers": [(b"content-type", b"application/json"),
                                    (b"content-length", str(len(body)).encode())]})
            await send({"type": "http.response.body", "body": body})
