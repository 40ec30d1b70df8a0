"""Files uploaded to the console: bounded while they stream, kept owner-only, never left behind.

`UploadLimit` counts the bytes of a POST body to the console's upload paths as they
arrive, before the form parser (or the CSRF check, which reads the form) keeps them: a
Content-Length over `[service] max_upload_mib` is refused at once, and a body that turns
out larger is cut off there. Either way the rest is read and discarded (up to a bound),
so the browser gets the answer — back to the form, with the reason — rather than a reset
connection, and nothing of the file is kept.

An accepted file is copied into the data directory (`console-uploads/`, 0700, files
0600: it holds personal data) for the registration to read, and deleted when the
registration ends, whatever its outcome; leftovers of a crash are deleted at start.
(Before that copy, the form parser keeps a file over 1 MiB in a temporary file: `shuqiao
serve` points its temporary files at `<data_dir>/tmp/`, owner-only, emptied at start;
node/server/serve.py, private_temp_dir.)
"""
from __future__ import annotations

import secrets
from pathlib import Path
from typing import Callable

from starlette.datastructures import UploadFile
from starlette.middleware import Middleware

from node.core.errors import InvalidInput
from node.storage.schema import open_private, private_dir

UPLOAD_DIR = "console-uploads"
DRAIN_BYTES = 64 << 20  # read and discard at most this much of a refused body
COPY_CHUNK = 1 << 20


class UploadTooLarge(InvalidInput):
    """The uploaded file is over the node's limit."""


class UploadLimit:
    """ASGI middleware: POST bodies to paths for which `is_upload(path)` holds are limited
    to `limit()` bytes; beyond, the client is sent back to `path?error=too_large`."""

    def __init__(self, app, is_upload: Callable[[str], bool], limit: Callable[[], int]) -> None:
        self.app, self.is_upload, self.limit = app, is_upload, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or not self.is_upload(scope["path"]):
            return await self.app(scope, receive, send)
        limit = self.limit()
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        over = declared.isdigit() and int(declared) > limit
        seen = 0
        ended = False

        async def counted():
            nonlocal seen, over, ended
            if over:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}
            return message

        async def guarded(message) -> None:
            if not over:
                await send(message)

        if not over:
            try:
                await self.app(scope, counted, guarded)
            except Exception:  # the form parser's ClientDisconnect, or whatever a cut body caused
                if not over:
                    raise
            if not over:
                return
        await _drain(receive, ended)
        await send({"type": "http.response.start", "status": 303, "headers": [
            (b"location", (scope["path"] + "?error=too_large").encode("latin-1")),
            (b"cache-control", b"no-store"), (b"content-length", b"0")]})
        await send({"type": "http.response.body", "body": b""})


async def _drain(receive, ended: bool) -> None:
    discarded = 0
    while not ended and discarded < DRAIN_BYTES:
        message = await receive()
        if message["type"] != "http.request":
            return
        discarded += len(message.get("body", b""))
        ended = not message.get("more_body", False)


def limit_uploads(app, is_upload: Callable[[str], bool], limit: Callable[[], int]) -> None:
    """Install `UploadLimit` inside the app's other middleware (the security headers
    still apply to its answers). Before the app serves its first request."""
    app.user_middleware.append(Middleware(UploadLimit, is_upload=is_upload, limit=limit))


def upload_dir(data_dir: Path) -> Path:
    return private_dir(data_dir / UPLOAD_DIR)


def clear_leftovers(data_dir: Path) -> None:
    """Delete uploads a crash left behind (their registrations never committed)."""
    folder = data_dir / UPLOAD_DIR
    if folder.is_dir():
        for path in folder.iterdir():
            path.unlink(missing_ok=True)


async def keep_upload(upload: UploadFile, folder: Path, suffix: str, limit: int) -> Path:
    """Copy an uploaded file into `folder` (an owner-only folder of the data directory,
    the file 0600); returns its path.

    Raises:
        UploadTooLarge: the file is over `limit` bytes (nothing is kept).
    """
    target = folder / f"{secrets.token_hex(12)}{suffix}"
    size = 0
    try:
        with open_private(target, "wb") as out:
            while chunk := await upload.read(COPY_CHUNK):
                size += len(chunk)
                if size > limit:
                    raise UploadTooLarge(f"the file is larger than this node accepts ({limit >> 20} MiB)")
                out.write(chunk)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    finally:
        await upload.close()
    return target
