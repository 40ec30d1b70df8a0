"""Dataset work started from the console (registration, refresh, key rotation), run on a
background thread while the page polls its progress.

A task is a small record in memory: its stage, units done and total (from the work's
progress callback, node/core/progress.py), then its outcome — the new version, its row
count and rejected rows as (line, reason), exactly what `shuqiao dataset add` reports
— or the reason it failed. The work itself is the CLI's (node/datasets/registration.py,
node/datasets/epochs.py): one database transaction each, so a failed task stored nothing.
The admin actions it ledgers name the console user (`console:<token name>`).

Tasks live as long as the serving process; the last `KEEP` are kept. A restart during a
registration loses the task record and nothing else (its transaction never committed).
"""
from __future__ import annotations

import logging
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime
from typing import Callable

from adapters import SourceError

from node.core.clock import Clock
from node.core.errors import ConfigError, InvalidInput
from node.runtime.admin_log import acting_as

log = logging.getLogger(__name__)

KEEP = 50


@dataclass
class Outcome:
    """What a finished task reports: the version made, counts, rejects (line, reason)."""
    version: int | None = None
    rows: int | None = None
    rejects: list[tuple[int, str]] = field(default_factory=list)
    summary: dict = field(default_factory=dict)


@dataclass
class Task:
    id: str
    kind: str          # "register", "refresh" or "rotate"
    dataset: str
    owner: str         # the token name that started it
    started_at: datetime  # from the context's clock
    stage: str = "queued"
    done: int = 0
    total: int | None = None
    status: str = "running"  # running, done, failed
    error: str | None = None
    outcome: Outcome | None = None
    finished_at: datetime | None = None

    def progress(self, stage: str, done: int, total: int | None) -> None:
        self.stage, self.done, self.total = stage, int(done), total

    def as_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "dataset": self.dataset, "stage": self.stage,
                "done": self.done, "total": self.total, "status": self.status,
                "finished": self.status != "running", "error": self.error}


class Tasks:
    """The console's dataset tasks: at most one running per dataset."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self._lock = threading.Lock()
        self._tasks: OrderedDict[str, Task] = OrderedDict()

    def get(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def recent(self, dataset: str | None = None) -> list[Task]:
        with self._lock:
            return [t for t in reversed(self._tasks.values()) if dataset in (None, t.dataset)]

    def start(self, kind: str, dataset: str, owner: str, work: Callable[[Task], Outcome],
              cleanup: Callable[[], None] = lambda: None, names: dict[str, str] | None = None) -> Task:
        """Run `work(task)` on a thread of its own, as `console:<owner>`. `names`: text to
        replace in an error message (an upload's private copy by the file's own name).

        Raises:
            TaskBusy: a task on this dataset is still running (nothing was started).
        """
        with self._lock:
            if any(t.dataset == dataset and t.status == "running" for t in self._tasks.values()):
                cleanup()
                raise TaskBusy(f"dataset {dataset!r} has a task running; wait until it ends")
            task = Task(secrets.token_urlsafe(12), kind, dataset, owner, started_at=self.clock.now())
            self._tasks[task.id] = task
            while len(self._tasks) > KEEP:
                self._tasks.popitem(last=False)
        threading.Thread(target=self._run, args=(task, work, cleanup, names or {}, self.clock), daemon=True,
                         name=f"console-{kind}").start()
        return task

    @staticmethod
    def _run(task: Task, work: Callable[[Task], Outcome], cleanup: Callable[[], None],
             names: dict[str, str], clock: Clock) -> None:
        try:
            with acting_as(f"console:{task.owner}"):
                task.outcome = work(task)
            task.status = "done"
        except (InvalidInput, SourceError, ConfigError) as exc:
            # Refusals of the registration and of the adapters: written for a person, and
            # never holding a cell's value (adapters/reader.py, adapters/base.py).
            line = getattr(exc, "line", None)
            text = str(exc)
            for private, shown in names.items():
                text = text.replace(private, shown)
            task.error = text + (f" (line {line})" if line and f"line {line}" not in text else "")
            task.status = "failed"
        except Exception as exc:  # details to the log only
            from node.core.incidents import opaque_message, record
            task.error = opaque_message(record(f"console {task.kind}", exc, log))
            task.status = "failed"
        finally:
            task.finished_at = clock.now()
            try:
                cleanup()
            except OSError:
                log.warning("console %s: an uploaded file could not be removed", task.kind)


class TaskBusy(InvalidInput):
    """Another task runs on the same dataset."""
