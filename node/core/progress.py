"""Progress of long work: a callback the CLI turns into progress bars (and the API into job status).

A stage name, the units done and the total (None when unknown). Work that reports nothing
takes `no_progress`.
"""
from __future__ import annotations

from typing import Callable

Progress = Callable[[str, int, int | None], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default callback: report nothing."""
