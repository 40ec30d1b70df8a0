"""The threads of `shuqiao serve` that run batch jobs, oldest queued first.

Each of `[service] job_workers` threads claims a queued job (one UPDATE that only one
claimant wins), runs it (node/jobs/targets.py) and records how it ended. While it runs,
its progress callback (node/core/progress.py) writes the stage, units done and total to
the job's row at most twice a second, and there reads whether the job was cancelled: a
cancelled job stops at that step, raising :class:`JobCancelled` through the run. A node
stopping stops its running jobs the same way; they end failed, with the reason
(:data:`node.jobs.queue.STOPPED_WHILE_RUNNING`), as after a crash (queue.recover).

A failed job's error is written for its operator: the refusal or the reader's message
(names and line numbers, never a value); anything unexpected is an incident in the log
(node/core/incidents.py) and the job names only the incident.
"""
from __future__ import annotations

import logging
import threading
import time

from sqlalchemy import select, update

from adapters import SourceError

from node.core.errors import ConfigError, InvalidInput, PartnerError, ShuqiaoError
from node.core.incidents import opaque_message, record
from node.jobs.inputs import open_list
from node.jobs.queue import STOPPED_WHILE_RUNNING, TABLES, Job, Status, get, job_dir
from node.jobs.targets import run_target
from node.runtime.context import NodeContext
from node.storage.schema import jobs

log = logging.getLogger(__name__)


class JobCancelled(ShuqiaoError):
    """The job was cancelled (or the node is stopping): its run ends at this step."""


class JobProgress:
    """A job's progress callback: the row updated, and cancellation seen, every `interval` s
    and whenever the stage changes."""

    def __init__(self, ctx: NodeContext, job_id: str, stopping: threading.Event,
                 interval: float = 0.5) -> None:
        self.ctx, self.job_id, self.stopping, self.interval = ctx, job_id, stopping, interval
        self.stage: str | None = None
        self.last = 0.0
        self.cancelled = False  # cancel seen: however the run ends now, the job is cancelled
        self.stopped = False    # the node is stopping

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if stage == self.stage and now - self.last < self.interval and not self.stopping.is_set():
            return
        self.stage, self.last = stage, now
        with self.ctx.engine.begin() as conn:
            conn.execute(update(jobs).where(jobs.c.id == self.job_id).values(
                stage=stage[:32], done=int(done), total=None if total is None else int(total)))
            requested = conn.execute(select(jobs.c.cancel_requested).where(
                jobs.c.id == self.job_id)).scalar()
        if requested:
            self.cancelled = True
            raise JobCancelled(self.job_id)
        if self.stopping.is_set():
            self.stopped = True
            raise JobCancelled(self.job_id)


def claim_next(ctx: NodeContext) -> Job | None:
    """Take the oldest queued job for this thread (None: nothing queued)."""
    while True:
        with ctx.engine.connect() as conn:
            job_id = conn.execute(select(jobs.c.id).where(jobs.c.status == Status.QUEUED.value)
                                  .order_by(jobs.c.created_at, jobs.c.id).limit(1)).scalar()
        if job_id is None:
            return None
        with ctx.engine.begin() as conn:
            won = conn.execute(update(jobs).where(
                jobs.c.id == job_id, jobs.c.status == Status.QUEUED.value).values(
                status=Status.RUNNING.value, stage="starting", started_at=ctx.clock.now())).rowcount
        if won:
            return get(ctx, job_id)


def run_job(ctx: NodeContext, job: Job, stopping: threading.Event | None = None) -> Status:
    """Run a claimed job to its end and record how it ended; returns that status."""
    progress = JobProgress(ctx, job.id, stopping or threading.Event())
    directory = job_dir(ctx, job.id)
    spec = job.spec
    counts, error, status = job.counts, None, Status.DONE
    try:
        progress("opening", 0, None)  # a job cancelled since it was claimed stops here
        with open_list(ctx, spec, directory / job.input_file if job.input_file else None) as source:
            counts = {**job.counts, **run_target(ctx, job.target, spec, source, directory, TABLES,
                                                 progress)}
    except BaseException as exc:  # noqa: BLE001 - every ending is recorded, then re-raised if fatal
        status, error = _ending(job, progress, exc)
        for name in TABLES.values():
            (directory / name).unlink(missing_ok=True)  # no half-saved result
        if not isinstance(exc, Exception):
            _finish(ctx, job, status, counts, error)
            raise
    _finish(ctx, job, status, counts, error)
    return status


def _ending(job: Job, progress: JobProgress, exc: BaseException) -> tuple[Status, str | None]:
    if progress.cancelled:
        return Status.CANCELLED, None
    if progress.stopped or not isinstance(exc, Exception):
        return Status.FAILED, STOPPED_WHILE_RUNNING
    if isinstance(exc, (PartnerError, InvalidInput, SourceError, ConfigError)):
        return Status.FAILED, str(exc)
    if isinstance(exc, ValueError) and _raised_here(exc):
        return Status.FAILED, str(exc)  # the node's own checks of a job's parameters
    return Status.FAILED, opaque_message(record(f"job {job.id}", exc, log))


def _raised_here(exc: BaseException) -> bool:
    """Raised by the node's or the adapters' own code (whose messages never hold a value),
    not by a library or a builtin (``int("...")`` quotes its argument)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    return tb is not None and tb.tb_frame.f_globals.get("__name__", "").startswith(("node.", "adapters."))


def _finish(ctx: NodeContext, job: Job, status: Status, counts: dict, error: str | None) -> None:
    with ctx.engine.begin() as conn:
        conn.execute(update(jobs).where(jobs.c.id == job.id).values(
            status=status.value, stage=status.value, counts=counts, error=error,
            finished_at=ctx.clock.now(),
            result_file=TABLES["result"] if status is Status.DONE else None))
    log.info("job %s %s", job.id, status.value)


class JobWorkers:
    """`[service] job_workers` threads running queued jobs until :meth:`stop`."""

    def __init__(self, ctx: NodeContext, threads: int | None = None, poll: float = 0.5) -> None:
        self.ctx, self.poll = ctx, poll
        self.count = threads or ctx.config.service.job_workers
        self.stopping = threading.Event()
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for i in range(self.count):
            t = threading.Thread(target=self._loop, name=f"jobs-{i}", daemon=True)
            t.start()
            self.threads.append(t)

    def _loop(self) -> None:
        while not self.stopping.is_set():
            try:
                job = claim_next(self.ctx)
                if job is not None:
                    run_job(self.ctx, job, self.stopping)
                    continue
            except Exception as exc:  # keep the worker; the next round retries
                record("the job worker", exc, log)
            self.stopping.wait(self.poll)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop taking jobs; running ones end at their next progress step (failed, with
        the reason a restart would give)."""
        self.stopping.set()
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
