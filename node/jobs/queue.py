"""Batch jobs: an applicant list run, in the background, against a rule or one partner query.

This is the engine behind `POST /v1/jobs` (node/http/jobs.py) and the console's operator
pages; both call these functions, and so may any other front end:

    job = submit(ctx, owner="gjj-ops", target=RuleTarget("flexible_deposit"),
                 spec=ListSpec(id_column="身份证号", file_name="申请.xlsx", file_format="xlsx"),
                 upload=received_file, scope=principal)
    get(ctx, job.id, owner="gjj-ops").status        # queued, running, done ...
    cancel(ctx, job.id, owner="gjj-ops")
    result_file(ctx, job, "result", fmt="xlsx", lang="zh")   # a path to send
    result_page(ctx, job, "result", lang="zh", offset=0, limit=50)  # a page to show

A job's life: ``queued`` → ``running`` (a worker thread of `shuqiao serve` took it,
node/jobs/worker.py) → ``done`` | ``failed`` (with a message for the operator) |
``cancelled``; after `[service] result_retention_hours` its files are deleted and it is
``expired`` (:func:`expire`, ledgered). A queued job cancelled never runs; a running one
stops at its next progress step. When the node starts, jobs still queued are run;
jobs that were running when it stopped are marked failed with the reason
(:func:`recover`), never silently lost.

Every job belongs to the token (by name) that submitted it: `owner` given to these
functions limits them to that owner's jobs, and another owner's job is "not found".
Files live under ``<data_dir>/jobs/<id>/``, owner-only: the uploaded list (``input.*``),
and the saved tables of the answers and of the rows not asked (node/jobs/saved.py),
rendered per download format and language beside them.
"""
from __future__ import annotations

import enum
import re
import shutil
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Protocol

from sqlalchemy import insert, select, update

from node.core.errors import InvalidInput, NotFound, NotPermitted
from node.jobs.inputs import ListSpec, check_list
from node.jobs.results import Lang
from node.jobs.saved import page, render
from node.ledger.canonical import CanonicalError
from node.jobs.targets import QueryTarget, RuleTarget, check_target, target_from_params
from node.runtime.context import NodeContext
from node.storage.schema import private_dir
from node.storage.result_files import result_format
from node.storage.schema import jobs

STOPPED_WHILE_RUNNING = ("the node stopped while this job ran; its partner queries are in the "
                         "ledger; submit it again")
RESULT_FORMATS = ("csv", "xlsx", "json")
TABLES = {"result": "answers.jsonl", "rejects": "rejects.jsonl"}


class Status(str, enum.Enum):
    QUEUED = "queued"
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


ENDED = (Status.DONE, Status.FAILED, Status.CANCELLED)


class JobNotFound(NotFound):
    """No such job for this caller (another owner's job is not found either)."""


class JobConflict(InvalidInput):
    """The job is not in a state that allows this (cancelling a finished job, downloading
    the result of one that is still running)."""


class Scope(Protocol):
    """What a caller may ask for: an HTTP principal or a console session fits."""

    def may_state(self, purpose: str) -> bool: ...

    def may_run(self, rule: str) -> bool: ...


@dataclass
class Job:
    """A job as the API and the console show it: names, progress and counts, never a row."""
    id: str
    owner: str
    kind: str               # "rule" or "query"
    params: dict            # the target and the list's spec (names, columns, file name)
    status: Status
    stage: str
    done: int
    total: int | None
    counts: dict = field(default_factory=dict)
    error: str | None = None
    cancel_requested: bool = False
    created_at: datetime | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    expired_at: datetime | None = None
    input_file: str | None = None
    result_file: str | None = None

    @property
    def target(self) -> RuleTarget | QueryTarget:
        return target_from_params(self.kind, self.params["target"])

    @property
    def spec(self) -> ListSpec:
        return ListSpec.from_params(self.params["list"])

    def public(self) -> dict:
        """The job as JSON for its owner: what `GET /v1/jobs/{id}` answers."""
        def when(t):
            return t.isoformat(timespec="seconds") if t else None
        return {"id": self.id, "kind": self.kind, "status": self.status.value, "stage": self.stage,
                "done": self.done, "total": self.total, "counts": self.counts, "error": self.error,
                "cancel_requested": self.cancel_requested, "target": self.params["target"],
                "list": self.params["list"], "created_at": when(self.created_at),
                "started_at": when(self.started_at), "finished_at": when(self.finished_at),
                "expired_at": when(self.expired_at),
                "results": self.status is Status.DONE and self.result_file is not None}


def _aware(t: datetime | None) -> datetime | None:
    """SQLite gives back naive datetimes for aware columns: they are UTC."""
    return t.replace(tzinfo=timezone.utc) if t is not None and t.tzinfo is None else t


def _job(row) -> Job:
    m = row._mapping
    return Job(m["id"], m["owner"], m["kind"], m["params"], Status(m["status"]), m["stage"],
               m["done"], m["total"], m["counts"] or {}, m["error"], bool(m["cancel_requested"]),
               *(_aware(m[k]) for k in ("created_at", "started_at", "finished_at", "expired_at")),
               m["input_file"], m["result_file"])


def jobs_dir(ctx: NodeContext) -> Path:
    return private_dir(ctx.config.data_dir / "jobs")


def job_dir(ctx: NodeContext, job_id: str) -> Path:
    return jobs_dir(ctx) / job_id


def incoming_dir(ctx: NodeContext) -> Path:
    """Where uploads are received before their job exists (emptied when the node starts)."""
    return private_dir(jobs_dir(ctx) / "incoming")


# -- submitting ---------------------------------------------------------------------------

def submit(ctx: NodeContext, *, owner: str, target: RuleTarget | QueryTarget, spec: ListSpec,
           upload: Path | None = None, scope: Scope | None = None) -> Job:
    """Check a job and queue it; returns it queued.

    Everything a job can be refused for is checked here, before anything is kept: the
    caller's scope (the rule, and each purpose stated), the target (rule in the rule file,
    partner configured, kind and predicate), and the list, read through once. On any
    refusal `upload` is deleted and no job exists.

    Args:
        upload: the received file (it is moved into the job's directory), or None for a
            named SQL source.

    Raises:
        NotPermitted: the scope does not allow the rule or a purpose it states.
        NotFound: no such rule or partner (node/jobs/targets.py).
        ConfigError, RulesNotConfigured: the node's own config is at fault (a partner
            without an address, the rule file).
        InvalidInput: the target or the list cannot be used (the message says why).
    """
    try:
        if (upload is None) != (spec.source is not None):
            raise InvalidInput("give either an uploaded file or a named SQL source")
        columns = check_target(ctx, target, scope, spec)
        rows = check_list(ctx, spec, upload, columns)
        return _queue(ctx, owner, target, spec, upload, rows)
    finally:
        if upload is not None:
            upload.unlink(missing_ok=True)


def new_job_id() -> str:
    """32 random hex digits without a long run of decimal digits: a job id goes into the
    ledger (its files' deletion), whose guard refuses anything shaped like a resident
    identifier (15 or 18 digits), as random hex sometimes is."""
    while True:
        job_id = uuid.uuid4().hex
        if not re.search(r"\d{10}", job_id):
            return job_id


def _queue(ctx: NodeContext, owner: str, target, spec: ListSpec, upload: Path | None,
           rows: int) -> Job:
    job_id = new_job_id()
    directory = job_dir(ctx, job_id)
    private_dir(directory)
    try:
        if upload is not None:
            shutil.move(upload, directory / spec.stored_name)
        now = ctx.clock.now()
        with ctx.engine.begin() as conn:
            conn.execute(insert(jobs).values(
                id=job_id, owner=owner, kind=target.kind,
                params={"target": target.params(), "list": spec.params()},
                status=Status.QUEUED.value, stage="queued", done=0,
                total=rows, counts={"rows": rows},  # as read now (an SQL source may change)
                cancel_requested=False, input_file=spec.stored_name, created_at=now))
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    return get(ctx, job_id)


# -- reading --------------------------------------------------------------------------------

def get(ctx: NodeContext, job_id: str, owner: str | None = None) -> Job:
    """The job `job_id` (of `owner`, if given).

    Raises:
        JobNotFound: no such job, or it belongs to another owner.
    """
    where = [jobs.c.id == job_id] + ([jobs.c.owner == owner] if owner is not None else [])
    with ctx.engine.connect() as conn:
        row = conn.execute(select(jobs).where(*where)).first()
    if row is None:
        raise JobNotFound(f"no job {job_id!r}")
    return _job(row)


def list_jobs(ctx: NodeContext, owner: str | None = None, *, status: Status | None = None,
              limit: int = 100, before: datetime | None = None) -> list[Job]:
    """Jobs, newest first: `owner`'s (None: everyone's, for overviews such as failed jobs),
    of one `status` if given, created before `before` (paging)."""
    q = select(jobs).order_by(jobs.c.created_at.desc(), jobs.c.id).limit(max(1, min(limit, 1000)))
    if owner is not None:
        q = q.where(jobs.c.owner == owner)
    if status is not None:
        q = q.where(jobs.c.status == Status(status).value)
    if before is not None:
        q = q.where(jobs.c.created_at < before)
    with ctx.engine.connect() as conn:
        return [_job(r) for r in conn.execute(q)]


# -- cancelling -------------------------------------------------------------------------------

def cancel(ctx: NodeContext, job_id: str, owner: str | None = None) -> Job:
    """Cancel a job: a queued one at once (it never runs), a running one at its next
    progress step (`cancel_requested` until then). Cancelling a cancelled job is a no-op.

    Raises:
        JobNotFound: as :func:`get`.
        JobConflict: the job had already ended otherwise (done, failed, expired).
    """
    job = get(ctx, job_id, owner)
    now = ctx.clock.now()
    with ctx.engine.begin() as conn:
        queued = conn.execute(update(jobs).where(
            jobs.c.id == job_id, jobs.c.status == Status.QUEUED.value).values(
            status=Status.CANCELLED.value, stage="cancelled", cancel_requested=True,
            finished_at=now)).rowcount
        if not queued:
            conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == Status.RUNNING.value).values(
                cancel_requested=True))
    job = get(ctx, job_id, owner)
    if job.status not in (Status.QUEUED, Status.RUNNING, Status.CANCELLED):
        raise JobConflict(f"job {job_id} has already ended ({job.status.value}); nothing to cancel")
    return job


# -- results ----------------------------------------------------------------------------------

def _downloadable(ctx: NodeContext, job: Job) -> None:
    if job.status is Status.EXPIRED:
        raise JobConflict(f"job {job.id}'s files were deleted after the retention time "
                          f"({ctx.config.service.result_retention_hours:g} h); run it again")
    if job.status is not Status.DONE or job.result_file is None:
        raise JobConflict(f"job {job.id} is {job.status.value}: it has no result to download")
    if not (job_dir(ctx, job.id) / job.result_file).exists():  # e.g. a node restored from a backup
        raise JobConflict(f"job {job.id}'s files are not on this node (a backup holds the "
                          "database only); run it again")


_render_locks: dict[Path, threading.Lock] = {}
_render_guard = threading.Lock()


def result_file(ctx: NodeContext, job: Job, which: str = "result", *, fmt: str = "xlsx",
                lang: Lang | str = Lang.zh) -> Path:
    """A done job's answers (`which` "result") or rows not asked ("rejects") as a file in
    `fmt` (csv, xlsx, json) and `lang` (zh, en), written on first download.

    Raises:
        JobConflict: the job is not done (running, failed ...) or its files have expired.
        InvalidInput: an unknown table, format or language.
    """
    if which not in TABLES or fmt not in RESULT_FORMATS:
        raise InvalidInput(f"ask for result or rejects as {', '.join(RESULT_FORMATS)}")
    lang = Lang(lang)
    _downloadable(ctx, job)
    directory = job_dir(ctx, job.id)
    out = directory / f"{which}.{lang.value}.{fmt}"
    result_format(out)
    with _render_guard:
        lock = _render_locks.setdefault(out, threading.Lock())
    with lock:
        if not out.exists():
            render(directory / TABLES[which], out, lang)
    return out


def result_page(ctx: NodeContext, job: Job, which: str = "result", *, lang: Lang | str = Lang.zh,
                offset: int = 0, limit: int = 50) -> dict:
    """One page of a done job's answers or rejects, for a console's table: ``{"columns",
    "rows", "offset", "total"}`` in `lang` (a rule's rows carry each person's explanation).

    Raises:
        JobConflict, InvalidInput: as :func:`result_file`.
    """
    if which not in TABLES:
        raise InvalidInput("ask for the result or the rejects")
    _downloadable(ctx, job)
    offset, limit = max(0, offset), max(1, min(limit, 1000))
    columns, rows = page(job_dir(ctx, job.id) / TABLES[which], lang, offset, limit)
    return {"columns": columns, "rows": rows, "offset": offset,
            "total": job.counts.get(f"{which}_rows")}


# -- start and retention ------------------------------------------------------------------------

def recover(ctx: NodeContext) -> list[str]:
    """At start: jobs left running by a stopped node are failed with the reason; uploads
    half received and job directories without a job are deleted. Queued jobs stay queued
    (the workers run them). Returns the ids of the jobs failed."""
    now = ctx.clock.now()
    with ctx.engine.begin() as conn:
        stopped = list(conn.execute(select(jobs.c.id).where(
            jobs.c.status == Status.RUNNING.value)).scalars())
        if stopped:
            conn.execute(update(jobs).where(jobs.c.id.in_(stopped)).values(
                status=Status.FAILED.value, stage="failed", error=STOPPED_WHILE_RUNNING,
                finished_at=now))
        known = set(conn.execute(select(jobs.c.id)).scalars())
    shutil.rmtree(incoming_dir(ctx), ignore_errors=True)
    for path in jobs_dir(ctx).iterdir():
        if path.is_dir() and path.name != "incoming" and path.name not in known:
            shutil.rmtree(path, ignore_errors=True)
    return stopped


def expire(ctx: NodeContext) -> list[str]:
    """Delete the files of jobs that ended more than `[service] result_retention_hours`
    ago; each deletion is ledgered (job id, owner, counts of files, never a row) and the
    job marked expired. Returns the ids expired."""
    hours = ctx.config.service.result_retention_hours
    cutoff = ctx.clock.now() - timedelta(hours=hours)
    with ctx.engine.connect() as conn:
        due = [_job(r) for r in conn.execute(select(jobs).where(
            jobs.c.status.in_([s.value for s in ENDED]), jobs.c.finished_at < cutoff))]
    if due:
        ctx.ledger  # before the write transaction (it may create its key)
    expired = []
    for job in due:
        directory = job_dir(ctx, job.id)
        files = sum(1 for p in directory.rglob("*") if p.is_file()) if directory.exists() else 0
        shutil.rmtree(directory, ignore_errors=True)
        try:
            done = _mark_expired(ctx, job, files, hours, owner=job.owner)
        except CanonicalError:  # a token name the ledger's guard takes for an identifier
            done = _mark_expired(ctx, job, files, hours, owner=None)
        if done:
            expired.append(job.id)
    return expired


def _mark_expired(ctx: NodeContext, job: Job, files: int, hours: float, owner: str | None) -> bool:
    from node.runtime.admin_log import record
    with ctx.engine.begin() as conn:
        changed = conn.execute(update(jobs).where(
            jobs.c.id == job.id, jobs.c.status == job.status.value).values(
            status=Status.EXPIRED.value, expired_at=ctx.clock.now(),
            counts={**job.counts, "ended": job.status.value})).rowcount
        if changed:
            record(ctx, conn, "job_files_deleted", f"job:{job.id}", owner=owner, kind=job.kind,
                   ended=job.status.value, files=files, retention_minutes=round(hours * 60))
    return bool(changed)
