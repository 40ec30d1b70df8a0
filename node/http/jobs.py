"""`/v1/jobs`: batch jobs for the fund centre's business systems and officers (operator role).

    POST /v1/jobs                      a job: multipart/form-data with the list in `file`, or
                                       JSON naming a configured SQL source; 202 + the job
    GET  /v1/jobs                      the caller's jobs, newest first (?status=, ?limit=)
    GET  /v1/jobs/{id}                 status, stage, done, total, counts, error
    POST /v1/jobs/{id}/cancel          cancel (a queued job never runs)
    GET  /v1/jobs/{id}/result          the answers: ?format=csv|xlsx|json &lang=zh|en
    GET  /v1/jobs/{id}/rejects         the rows not asked, with the reason (no identifier)
    GET  /v1/jobs/{id}/rows            a page of either as JSON: ?table=&offset=&limit=&lang=

A job's fields: either `rule` (a rule of `[service] rules_file`) or `partner`, `dataset`,
`purpose`, optional `kind` (membership, labeled, predicate, bulk), `predicate`, `select`;
and for the list `id_column`, `id_type` (default cn_resident_id), `auth_column`,
`encoding` (auto, utf-8, gb18030) or `sheet`; JSON names the list with `source`.

Every job belongs to the token that submitted it. Only operators see jobs, and each
operator only its own: results name applicants, so neither an admin nor an auditor nor
another operator reads them (another's job id is 404, as if it did not exist). Each POST
needs an Idempotency-Key (node/http/idempotency.py); the request's digest covers the
uploaded bytes, so a retry after a lost answer gets the same job id, and the same key
with another file is refused. A job is checked before it is queued: scopes (403), the
target and the list, read through once (422: wrong encoding, damaged or bomb-like
workbook, missing column); a refused upload leaves no job and no file.
"""

import json
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from node.core.errors import ConfigError, InvalidInput, NotFound, NotPermitted
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.http.idempotency import HEADER, idempotent, request_digest
from node.http.uploads import receive_upload
from node.jobs import queue
from node.jobs.inputs import ListSpec, file_format
from node.jobs.targets import QueryTarget, RuleTarget
from node.runtime.context import NodeContext

_TARGET_FIELDS = ("rule", "partner", "dataset", "purpose", "kind", "predicate", "select")
_LIST_FIELDS = ("id_column", "id_type", "auth_column", "encoding", "sheet")
_MEDIA = {"csv": "text/csv; charset=utf-8", "json": "application/json",
          "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}


_FIELD_DOC = {
    "rule": {"type": "string", "description": "a rule of [service] rules_file (or a partner query)"},
    "partner": {"type": "string"}, "dataset": {"type": "string"}, "purpose": {"type": "string"},
    "kind": {"type": "string", "enum": ["membership", "labeled", "predicate", "bulk"]},
    "predicate": {"type": "string"},
    "select": {"type": "string", "enum": ["all", "intersection", "difference"]},
    "id_column": {"type": "string"}, "id_type": {"type": "string", "default": "cn_resident_id"},
    "auth_column": {"type": "string"}, "encoding": {"type": "string", "enum": ["auto", "utf-8", "gb18030"]},
    "sheet": {"type": "string"},
}
_SUBMIT_DOC = {
    "requestBody": {"required": True, "content": {
        "multipart/form-data": {"schema": {"type": "object", "required": ["file", "id_column"],
                                           "properties": {"file": {"type": "string", "format": "binary"},
                                                          **_FIELD_DOC}}},
        "application/json": {"schema": {"type": "object", "required": ["source", "id_column"],
                                         "properties": {"source": {"type": "string"}, **_FIELD_DOC}}}}},
}


def _target(fields: dict) -> RuleTarget | QueryTarget:
    unknown = set(fields) - set(_TARGET_FIELDS) - set(_LIST_FIELDS) - {"source", "csrf"}
    if unknown:
        raise HTTPException(status_code=400, detail=f"unknown fields: {', '.join(sorted(unknown))}")
    if fields.get("rule"):
        extra = [k for k in _TARGET_FIELDS[1:] if fields.get(k)]
        if extra:
            raise HTTPException(status_code=400, detail="give a rule, or a partner query "
                                f"(partner, dataset, purpose), not both ({', '.join(extra)})")
        return RuleTarget(str(fields["rule"]))
    missing = [k for k in ("partner", "dataset", "purpose") if not fields.get(k)]
    if missing:
        raise HTTPException(status_code=400, detail="give a rule, or a partner query: missing "
                            + ", ".join(missing))
    return QueryTarget(str(fields["partner"]), str(fields["dataset"]), str(fields["purpose"]),
                       query_kind=str(fields.get("kind") or "membership"),
                       predicate=fields.get("predicate") or None,
                       select=str(fields.get("select") or "all"))


def _spec(fields: dict, **where) -> ListSpec:
    try:
        return ListSpec(**{k: str(fields[k]) for k in _LIST_FIELDS if fields.get(k)}, **where)
    except TypeError:
        raise HTTPException(status_code=400, detail="id_column is required") from None
    except InvalidInput as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _refused(exc: Exception) -> HTTPException:
    """The status of a refusal, as real-time checks give it (node/http/service.py): no such
    job, rule or partner 404; the node's own config at fault (its rule file, a partner
    without an address) 503; anything else about the request 422."""
    from node.rules.realtime import RulesNotConfigured, UnknownRule
    if isinstance(exc, NotPermitted):
        return HTTPException(status_code=403, detail=str(exc))
    if isinstance(exc, (NotFound, UnknownRule)):
        return HTTPException(status_code=404, detail=str(exc))
    if isinstance(exc, queue.JobConflict):
        return HTTPException(status_code=409, detail=str(exc))
    if isinstance(exc, (RulesNotConfigured, ConfigError)):
        return HTTPException(status_code=503, detail=str(exc))
    return HTTPException(status_code=422, detail=str(exc))


def jobs_router(ctx: NodeContext, auth: Authenticator) -> APIRouter:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    router = APIRouter(prefix="/v1/jobs", tags=["jobs"])
    Operator = Annotated[Principal, Depends(auth.require(Role.OPERATOR))]
    Key = Annotated[str | None, Header(alias=HEADER)]

    def submitted(principal: Principal, target, spec: ListSpec, upload):
        def run():
            try:
                job = queue.submit(ctx, owner=principal.name, target=target, spec=spec,
                                   upload=upload, scope=principal)
            except (InvalidInput, NotPermitted, NotFound, ConfigError) as exc:
                raise _refused(exc) from None
            return 202, job.public()
        return run

    @router.post("", status_code=202, openapi_extra=_SUBMIT_DOC, summary="Submit a batch job")
    async def submit(request: Request, principal: Operator, key: Key = None):
        """Queue a job over an uploaded list (multipart) or a named SQL source (JSON)."""
        if key is None:  # refused before the body is read (idempotent() says how)
            return await run_in_threadpool(idempotent, ctx, principal, None, "", lambda: (0, {}))
        if request.headers.get("content-type", "").startswith("application/json"):
            try:
                fields = json.loads(await request.body())
            except ValueError:
                fields = None
            if not isinstance(fields, dict):
                raise HTTPException(status_code=400, detail="the body is not a JSON object")
            if not fields.get("source"):
                raise HTTPException(status_code=400, detail="name a configured SQL source "
                                    "(`source`), or upload the list as multipart/form-data")
            target, spec = _target(fields), _spec(fields, source=str(fields["source"]))
            digest = request_digest("POST /v1/jobs json", json.dumps(fields, sort_keys=True))
            return await run_in_threadpool(idempotent, ctx, principal, key, digest,
                                           submitted(principal, target, spec, None))
        upload = await receive_upload(ctx, request, queue.incoming_dir(ctx))
        try:
            if upload.path is None:
                raise HTTPException(status_code=400, detail="no file: send the applicant list "
                                    "in the form field 'file'")
            fields = {k: v for k, v in upload.fields.items() if k != "csrf"}
            if fields.get("source"):
                raise HTTPException(status_code=400, detail="give a file or a named SQL source, "
                                    "not both")
            try:
                fmt = file_format(upload.filename or "")
            except InvalidInput as exc:
                raise HTTPException(status_code=422, detail=str(exc)) from None
            target = _target(fields)
            spec = _spec(fields, file_name=upload.filename, file_format=fmt)
            digest = request_digest("POST /v1/jobs file", json.dumps(fields, sort_keys=True),
                                    upload.filename or "", upload.sha256)
            return await run_in_threadpool(idempotent, ctx, principal, key, digest,
                                           submitted(principal, target, spec, upload.path))
        finally:
            upload.discard()  # moved into the job's directory if it was queued

    @router.get("", summary="The caller's jobs")
    def listing(principal: Operator, status: queue.Status | None = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict]:
        """The caller's jobs, newest first."""
        return [j.public() for j in queue.list_jobs(ctx, principal.name, status=status, limit=limit)]

    @router.get("/{job_id}", summary="A job's status and progress")
    def status(job_id: str, principal: Operator) -> dict:
        try:
            return queue.get(ctx, job_id, principal.name).public()
        except queue.JobNotFound as exc:
            raise _refused(exc) from None

    @router.post("/{job_id}/cancel", summary="Cancel a job")
    def cancel(job_id: str, principal: Operator, key: Key = None):
        def run():
            try:
                return 200, queue.cancel(ctx, job_id, principal.name).public()
            except (queue.JobNotFound, queue.JobConflict) as exc:
                raise _refused(exc) from None
        return idempotent(ctx, principal, key, request_digest("POST cancel", job_id), run)

    def download(job_id: str, principal: Principal, which: str, fmt: str, lang: str):
        try:
            job = queue.get(ctx, job_id, principal.name)
            path = queue.result_file(ctx, job, which, fmt=fmt, lang=lang)
        except (queue.JobNotFound, queue.JobConflict, InvalidInput) as exc:
            raise _refused(exc) from None
        return FileResponse(path, media_type=_MEDIA[fmt],
                            filename=f"job-{job_id}-{which}.{lang}.{fmt}")

    Format = Annotated[Literal["csv", "xlsx", "json"], Query(alias="format")]
    Lang = Literal["zh", "en"]

    @router.get("/{job_id}/result", summary="Download a job's answers")
    def result(job_id: str, principal: Operator, fmt: Format = "xlsx", lang: Lang = "zh"):
        """The answers, one row per input row, in the format and language asked."""
        return download(job_id, principal, "result", fmt, lang)

    @router.get("/{job_id}/rejects", summary="Download the rows a job did not ask")
    def rejects(job_id: str, principal: Operator, fmt: Format = "xlsx", lang: Lang = "zh"):
        """The rows not asked, with every column but the identifier, and the reason."""
        return download(job_id, principal, "rejects", fmt, lang)

    @router.get("/{job_id}/rows", summary="A page of a job's answers or rejects")
    def rows(job_id: str, principal: Operator, table: Literal["result", "rejects"] = "result",
             offset: Annotated[int, Query(ge=0)] = 0, limit: Annotated[int, Query(ge=1, le=1000)] = 50,
             lang: Lang = "zh") -> dict:
        """A page of the answers (or rejects) as JSON: columns, rows, offset, total."""
        try:
            return queue.result_page(ctx, queue.get(ctx, job_id, principal.name), table,
                                     lang=lang, offset=offset, limit=limit)
        except (queue.JobNotFound, queue.JobConflict, InvalidInput) as exc:
            raise _refused(exc) from None

    return router
