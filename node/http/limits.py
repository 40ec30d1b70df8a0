"""Body size limits per route, enforced before a route reads anything.

FastAPI reads a JSON body whole before any dependency runs, so a limit has to sit in
front of the app: a request to a limited path whose `Content-Length` says too much is
answered 413 at once; one without a length (chunked) is read up to the limit and
answered 413 as soon as it passes it. Nothing of the body is kept or logged.
"""
from __future__ import annotations

import json

from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """ASGI middleware: `limits` maps (method, path) to the largest body in bytes."""

    def __init__(self, app: ASGIApp, *, limits: dict[tuple[str, str], int]) -> None:
        self.app, self.limits = app, dict(limits)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        limit = self.limits.get((scope.get("method", ""), scope.get("path", ""))) if scope["type"] == "http" else None
        if limit is None:
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await too_large(send, _limit_text(limit))
            return
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await too_large(send, _limit_text(limit))
                return
            chunks.append(chunk)
            more = message.get("more_body", False)
        body, sent = b"".join(chunks), False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()  # a disconnect, when the client goes
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


async def too_large(send: Send, detail: str) -> None:
    """Answer 413 with `detail` and close the connection (the rest of the body is not read)."""
    body = json.dumps({"detail": detail}).encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close"), (b"cache-control", b"no-store")]})
    await send({"type": "http.response.body", "body": body})


def _limit_text(limit: int) -> str:
    return f"the request body is larger than {limit // 1024} KiB"
