"""Uploads: request bodies bounded while they stream, files received straight to disk.

`[service] max_upload_mib` bounds every request body of the HTTP API (:class:`UploadBound`,
one ASGI middleware; the console's pages bound their own uploads, by the same setting, and
answer in the page): a declared Content-Length beyond it is refused
before a byte is read, and a body sent without one (chunked) is cut off the moment it
passes the bound -- whoever is reading it (an upload route, or the CSRF check reading a
form a console session posts to the API) gets :class:`BodyTooLarge`, and the caller a 413.

:func:`receive_upload` parses a multipart/form-data body as it streams
(python-multipart's push parser): small text fields are kept in memory (bounded), and
the one file part goes to an owner-only file under the given directory, hashed as it is
written (the Idempotency-Key digest covers the uploaded bytes). On any failure the file
is deleted: nothing half-received is kept.
"""
from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import HTTPException, Request
from python_multipart.multipart import MultipartParser, parse_options_header

from node.core.errors import InvalidInput
from node.core.incidents import WatchedSend
from node.http.limits import too_large
from node.runtime.context import NodeContext
from node.storage.schema import open_private

MiB = 1 << 20
FORM_ALLOWANCE = 1 * MiB   # a form's fields and framing beside its file
MAX_FIELDS = 32
MAX_FIELD_BYTES = 64 * 1024
# The console bounds its own uploads and answers in its pages (node/console/uploads.py).
CONSOLE_PREFIX = "/console/"


class BodyTooLarge(InvalidInput):
    """A request body passed `[service] max_upload_mib` while it streamed."""


def upload_limit(ctx: NodeContext) -> int:
    """The largest file an upload may carry, in bytes."""
    return ctx.config.service.max_upload_mib * MiB


def _too_large_message(ctx: NodeContext) -> str:
    return (f"the upload is larger than the {ctx.config.service.max_upload_mib} MiB this node "
            "accepts ([service] max_upload_mib); split the list into smaller files")


class UploadBound:
    """ASGI middleware: every request body bounded by `[service] max_upload_mib` (plus a
    form's allowance), refused early (Content-Length) or cut off while it streams."""

    def __init__(self, app, ctx: NodeContext) -> None:
        self.app, self.ctx = app, ctx

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope.get("path", "").startswith(CONSOLE_PREFIX):
            return await self.app(scope, receive, send)
        limit = upload_limit(self.ctx) + FORM_ALLOWANCE
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await too_large(send, _too_large_message(self.ctx))
        seen = 0

        async def counted():
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLarge()
            return message

        watched = WatchedSend(send)
        try:
            await self.app(scope, counted, watched)
        except BodyTooLarge:
            if watched.started:
                raise
            await too_large(send, _too_large_message(self.ctx))


@dataclass
class Upload:
    """A received multipart form: its text fields, and its file (None: no file part)."""
    fields: dict[str, str] = field(default_factory=dict)
    path: Path | None = None
    filename: str | None = None
    sha256: str = ""
    size: int = 0

    def discard(self) -> None:
        if self.path is not None:
            self.path.unlink(missing_ok=True)


class _Receiver:
    """python-multipart callbacks: fields to memory, the file part to disk."""

    def __init__(self, directory: Path, file_field: str, limit: int, too_large: str) -> None:
        self.directory, self.file_field, self.limit, self.too_large = directory, file_field, limit, too_large
        self.upload = Upload()
        self._headers: dict[str, str] = {}
        self._header_field = b""
        self._header_value = b""
        self._name: str | None = None
        self._value = bytearray()
        self._file = None
        self._hash = hashlib.sha256()

    def callbacks(self) -> dict:
        return {"on_part_begin": self._part_begin, "on_header_field": self._field,
                "on_header_value": self._value_data, "on_header_end": self._header_end,
                "on_headers_finished": self._headers_done, "on_part_data": self._data,
                "on_part_end": self._part_end}

    def _part_begin(self) -> None:
        self._headers, self._name, self._value = {}, None, bytearray()

    def _field(self, data, start, end) -> None:
        self._header_field += data[start:end]

    def _value_data(self, data, start, end) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        # latin-1 both ways: the header's bytes reach parse_options_header unchanged
        self._headers[self._header_field.decode("latin-1").lower()] = self._header_value.decode("latin-1")
        self._header_field, self._header_value = b"", b""

    def _headers_done(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", ""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        if filename == b"":  # a browser's file input left empty: no file
            self._name = None
            return
        if filename is not None:
            if name != self.file_field or self.upload.path is not None:
                raise HTTPException(status_code=400, detail=f"send one file, in the form field "
                                    f"{self.file_field!r}")
            self.upload.filename = Path(filename.decode("utf-8", "replace").replace("\\", "/")).name
            self.upload.path = self.directory / f"{uuid.uuid4().hex}.part"
            self._file = open_private(self.upload.path, "wb")
        elif len(self.upload.fields) >= MAX_FIELDS:
            raise HTTPException(status_code=400, detail="too many form fields")
        self._name = name

    def _data(self, data, start, end) -> None:
        chunk = data[start:end]
        if self._file is not None:
            self.upload.size += len(chunk)
            if self.upload.size > self.limit:
                raise HTTPException(status_code=413, detail=self.too_large)
            self._hash.update(chunk)
            self._file.write(chunk)
        elif self._name is not None:
            self._value += chunk
            if len(self._value) > MAX_FIELD_BYTES:
                raise HTTPException(status_code=400, detail=f"form field {self._name!r} is too long")

    def _part_end(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
            self.upload.sha256 = self._hash.hexdigest()
        elif self._name:
            try:
                self.upload.fields[self._name] = self._value.decode("utf-8")
            except UnicodeDecodeError:
                raise HTTPException(status_code=400, detail=f"form field {self._name!r} is not "
                                    "UTF-8 text") from None

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


async def receive_upload(ctx: NodeContext, request: Request, directory: Path,
                         file_field: str = "file") -> Upload:
    """Parse a multipart/form-data request as it streams; the file goes under `directory`.

    A form the console's CSRF check has already read (a cookie session without the
    X-CSRF-Token header) is taken from Starlette's parsed form instead; the body was
    bounded by :class:`UploadBound` while it was read either way.

    Raises:
        HTTPException: 400 (not multipart, malformed, a field too long or repeated files),
            413 (the file passes `[service] max_upload_mib`); the file is deleted.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if content_type != b"multipart/form-data" or not boundary:
        raise HTTPException(status_code=400, detail="send the list as multipart/form-data "
                            f"(a file in the field {file_field!r} and the job's fields)")
    receiver = _Receiver(directory, file_field, upload_limit(ctx), _too_large_message(ctx))
    try:
        if _form_already_read(request):
            await _from_parsed_form(request, receiver)
        else:
            parser = MultipartParser(boundary, receiver.callbacks())
            async for chunk in request.stream():
                parser.write(chunk)
            parser.finalize()
            if receiver._file is not None:  # the body ended inside the file part
                raise ValueError("truncated")
    except BaseException as exc:
        receiver.close()
        receiver.upload.discard()
        if isinstance(exc, (HTTPException, BodyTooLarge)):
            raise
        if isinstance(exc, Exception):
            raise HTTPException(status_code=400, detail="the form is malformed (multipart/form-data "
                                "could not be parsed)") from None
        raise
    return receiver.upload


def _form_already_read(request: Request) -> bool:
    return (request.headers.get("authorization") is None and request.headers.get("x-csrf-token") is None
            and request.method == "POST")


async def _from_parsed_form(request: Request, receiver: _Receiver) -> None:
    """The form Starlette parsed for the CSRF check (cached on the request), copied over."""
    form = await request.form()
    try:
        for name, value in form.multi_items():
            if isinstance(value, str):
                receiver._part_begin()
                receiver._name = name
                receiver._data(value.encode(), 0, len(value.encode()))
                receiver._part_end()
                continue
            if not value.filename:  # a browser's file input left empty: no file
                continue
            disposition = f'form-data; name="{name}"; filename="{value.filename}"'
            receiver._part_begin()
            receiver._headers = {"content-disposition": disposition.encode().decode("latin-1")}
            receiver._headers_done()
            while chunk := await value.read(1 << 16):
                receiver._data(chunk, 0, len(chunk))
            receiver._part_end()
    finally:
        await form.close()
