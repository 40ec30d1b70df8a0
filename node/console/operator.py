"""The fund-centre operator's batch pages: upload applicants, pick a rule or a partner query,
watch the job's progress, page through the answers with an explanation per person, download.

Jobs are those of node/jobs/queue.py (the engine behind /v1/jobs), owned by the token's
name: an operator sees, cancels and downloads only their own. The choices offered are the
token's scope (its rules, its purposes), and the same scope is enforced again on submit,
whatever was posted. The upload is bounded by `[service] max_upload_mib` (node/http/uploads.py
refuses a larger body before it is read), received into the jobs' incoming folder
(owner-only), and deleted whatever the outcome if no job takes it.
"""
from __future__ import annotations

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse, RedirectResponse, Response
from starlette.datastructures import UploadFile

from node.console import operator_words
from node.console.operator_forms import JobForm, choices
from node.console.operator_results import read_page
from node.console.pages import language, menu_item, render
from node.console.uploads import UploadTooLarge, keep_upload
from node.core.errors import InvalidInput, NotPermitted
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.jobs import queue
from node.jobs.inputs import ListSpec, file_format
from node.runtime.context import NodeContext

WORDS = operator_words.WORDS
STEPS = ("queued", "reading", "asking", "writing", "done")
STEP_OF = {"queued": 0, "starting": 0, "opening": 1, "reading": 1, "writing": 3, "done": 4}


def _filters(job: queue.Job) -> list[tuple[str, int | None]]:
    """The decisions a job's results can be narrowed to, with how many rows have each."""
    c = job.counts
    if job.kind == "rule":
        return [(k, c.get(k)) for k in ("eligible", "not_eligible", "undetermined")]
    rows, matched, invalid = c.get("rows"), c.get("matched_rows"), c.get("invalid")
    missing = rows - matched - invalid if None not in (rows, matched, invalid) else None
    return [("yes", matched), ("no", missing), ("invalid", invalid)]


def _percent(job: queue.Job) -> str:
    """How far the current stage is (its units differ: bytes, rows, identifiers)."""
    if not job.total:
        return ""
    return f"{min(100, 100 * job.done // job.total)}%"


def _steps(job: queue.Job) -> list[tuple[str, str]]:
    """Each step of a job with its state: done, current (while it runs) or ahead ("")."""
    if job.status is queue.Status.DONE or job.status is queue.Status.EXPIRED:
        return [(name, "done") for name in STEPS]
    at = STEP_OF.get(job.stage, 2)
    running = job.status in (queue.Status.QUEUED, queue.Status.RUNNING)
    return [(name, "done" if i < at else "current" if i == at and running else "")
            for i, name in enumerate(STEPS)]


def _stage_text(t, stage: str) -> str:
    text = t("stage." + stage)
    return stage if text == "stage." + stage else text


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    operator = auth.require(Role.OPERATOR)
    menu_item("/console/ops/jobs", {"zh": "批量核验", "en": "Batch checks"}, Role.OPERATOR)

    def job_of(job_id: str, principal: Principal) -> queue.Job:
        try:
            return queue.get(ctx, job_id, owner=principal.name)
        except queue.JobNotFound:
            raise HTTPException(status_code=404, detail="no such job among yours") from None

    def form_page(request, principal, *, form: JobForm | None = None, error: str | None = None,
                  status: int = 200) -> Response:
        mine = queue.list_jobs(ctx, principal.name, limit=20)
        return render(request, "ops_jobs.html", principal, words=WORDS, status_code=status,
                      choices=choices(ctx, principal), form=form or JobForm(), error=error, jobs=mine,
                      max_mib=ctx.config.service.max_upload_mib,
                      list_sources=ctx.config.service.applicant_sources,
                      stage_text=lambda s: _stage_text(lambda k: WORDS[language(request)].get(k, k), s))

    @app.get("/console/ops/jobs", include_in_schema=False)
    def jobs_page(request: Request, principal: Principal = Depends(operator)):
        return form_page(request, principal)

    @app.post("/console/ops/jobs", include_in_schema=False)
    async def submit(request: Request, principal: Principal = Depends(operator)):
        data = await request.form()  # already parsed (and its CSRF field checked) by require()
        form = JobForm.parse(data)
        upload = data.get("file")
        received = None
        try:
            target = form.target(principal)  # scope refused here: NotPermitted
            if form.list_source and isinstance(upload, UploadFile) and upload.filename:
                raise InvalidInput("choose either a file to upload or a configured source, not both")
            if form.list_source:  # a configured SQL source: nothing uploaded
                spec = ListSpec(id_column=form.id_column, source=form.list_source,
                                auth_column=form.auth_column or None)
            else:
                if not isinstance(upload, UploadFile) or not upload.filename:
                    raise InvalidInput("choose the applicant file (.csv or .xlsx) to upload")
                fmt = file_format(upload.filename)
                spec = ListSpec(id_column=form.id_column, file_name=upload.filename, file_format=fmt,
                                encoding=form.encoding, sheet=form.sheet or None,
                                auth_column=form.auth_column or None)
                received = await _receive(ctx, upload, fmt)
            job = queue.submit(ctx, owner=principal.name, target=target, spec=spec, upload=received,
                               scope=principal)
        except NotPermitted as exc:
            return form_page(request, principal, form=form, error=str(exc), status=403)
        except UploadTooLarge as exc:
            return form_page(request, principal, form=form, error=str(exc), status=413)
        except InvalidInput as exc:
            return form_page(request, principal, form=form, error=str(exc), status=400)
        return RedirectResponse(f"/console/ops/jobs/{job.id}", status_code=303)

    @app.get("/console/ops/jobs/{job_id}", include_in_schema=False)
    def job_page(request: Request, job_id: str, page: int = 1, decision: str = "",
                 principal: Principal = Depends(operator)):
        job = job_of(job_id, principal)
        lang = language(request)
        t = _words(lang)
        results, unavailable = None, None
        if job.status is queue.Status.DONE:
            try:
                results = read_page(ctx, job, lang=lang, page=page, explain=t, decision=decision or None)
            except queue.JobConflict as exc:  # files expired, or not on this node
                unavailable = str(exc)
        ended = job.status in queue.ENDED or job.status is queue.Status.EXPIRED
        steps = _steps(job)
        step = next((i for i, (_, state) in enumerate(steps) if state == "current"), len(steps))
        return render(request, "ops_job.html", principal, words=WORDS, job=job, results=results,
                      steps=steps, step=step, stage=_stage_text(t, job.stage), ended=ended,
                      percent=_percent(job), decision=decision, filters=_filters(job),
                      unavailable=unavailable)

    @app.get("/console/ops/jobs/{job_id}/progress.json", include_in_schema=False)
    def progress(request: Request, job_id: str, principal: Principal = Depends(operator)):
        job = job_of(job_id, principal)
        t = _words(language(request))
        ended = job.status in queue.ENDED or job.status is queue.Status.EXPIRED
        return JSONResponse({"stage": _stage_text(t, job.stage), "done": job.done, "total": job.total,
                             "status": t("status." + job.status.value), "finished": ended,
                             "step": STEP_OF.get(job.stage, 2), "percent": _percent(job)})

    @app.post("/console/ops/jobs/{job_id}/cancel", include_in_schema=False)
    def cancel(job_id: str, principal: Principal = Depends(operator)):
        job_of(job_id, principal)
        try:
            queue.cancel(ctx, job_id, owner=principal.name)
        except queue.JobConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        return RedirectResponse(f"/console/ops/jobs/{job_id}", status_code=303)

    @app.get("/console/ops/jobs/{job_id}/download", include_in_schema=False)
    def download(request: Request, job_id: str, fmt: str = "xlsx", table: str = "result",
                 principal: Principal = Depends(operator)):
        job = job_of(job_id, principal)
        lang = language(request)
        try:
            path = queue.result_file(ctx, job, table, fmt=fmt, lang=lang)
        except queue.JobConflict as exc:
            raise HTTPException(status_code=409, detail=str(exc)) from None
        except InvalidInput as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        stem = _words(lang)("file." + table)
        return FileResponse(path, filename=f"{stem}-{job.id[:8]}.{fmt}",
                            media_type=operator_words.MEDIA_TYPES[fmt])


def _words(lang: str):
    words = WORDS[lang]

    def t(key: str, **values) -> str:
        text = words.get(key, key)
        return text.format(**values) if values else text
    return t


async def _receive(ctx: NodeContext, upload: UploadFile, fmt: str):
    """The uploaded file copied into the jobs' incoming folder (owner-only), bounded."""
    path = await keep_upload(upload, queue.incoming_dir(ctx), f".{fmt}", ctx.config.service.max_upload_mib << 20)
    if path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        raise InvalidInput("the uploaded file is empty")
    return path
