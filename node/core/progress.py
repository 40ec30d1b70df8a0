"""Progress of long work: a callback the CLI turns into progress bars (and the API into job status).

A stage name, the units done and the total (None when unknown). Work that reports nothing
takes `no_progress`.
"""
from __future__ import annotations

from typing import Callable, Iterable, Iterator

Progress = Callable[[str, int, int | None], None]


def no_progress(stage: str, done: int, total: int | None) -> None:
    """The default callback: report nothing."""


class StageClock:
    """Wall seconds per named stage of a long run, for logs and benchmarks: each stage
    runs until the next one is marked (``mark(None)`` stops the clock)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self.seconds: dict[str, float] = {}
        self._stage: str | None = None
        self._since = 0.0

    def mark(self, stage: str | None) -> None:
        now = self._clock()
        if self._stage is not None:
            self.seconds[self._stage] = self.seconds.get(self._stage, 0.0) + now - self._since
        self._stage, self._since = stage, now

    def rounded(self) -> dict[str, float]:
        self.mark(self._stage)  # count the running stage up to now
        return {k: round(v, 3) for k, v in sorted(self.seconds.items())}

    def waiting(self, items: Iterable, stage: str = "wait") -> Iterator:
        """The items, the time spent waiting for each counted as ``stage`` (a peer's
        messages: its computation and the transfer)."""
        it = iter(items)
        while True:
            self.mark(stage)
            try:
                item = next(it)
            except StopIteration:
                return
            self.mark("protocol")
            yield item
