"""The node's clock: wall-clock time enters the node here and nowhere else.

Every timestamp the node stores, signs or compares against a window (a ledger entry's
time, a quota's rolling day, a key epoch's age, a certificate's validity) is read from
one `Clock`, which the NodeContext owns (`ctx.clock`) and hands down. Production uses
`SystemClock`; tests use `FixedClock` to make times reproducible and to move time on
(past a grace period, a quota window) without waiting.

Durations and timeouts are another matter: the call watchdog (node/transport/
identity.py), the maintenance loop's schedule (node/server/serve.py) and elapsed
times read `time.monotonic` / `time.perf_counter`, which never jump with the wall clock
and say nothing about what time it is; they stay as they are.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Protocol, runtime_checkable

__all__ = ["Clock", "FixedClock", "SYSTEM_CLOCK", "SystemClock"]


@runtime_checkable
class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware, in UTC."""
        ...


class SystemClock:
    """The machine's wall clock."""

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def __repr__(self) -> str:
        return "SystemClock()"


SYSTEM_CLOCK = SystemClock()


class FixedClock:
    """A clock that stands still until moved: reproducible times in tests.

    Args:
        at: the time it shows; must be timezone-aware (it is kept in UTC).
    """

    def __init__(self, at: datetime = datetime(2025, 3, 1, 8, 0, 0, tzinfo=timezone.utc)) -> None:
        self.set(at)

    def now(self) -> datetime:
        return self._at

    def set(self, at: datetime) -> None:
        if at.tzinfo is None:
            raise ValueError("a clock shows aware times; give the time zone")
        self._at = at.astimezone(timezone.utc)

    def advance(self, delta: timedelta | None = None, **parts: float) -> datetime:
        """Move on by `delta` (or timedelta(**parts)); returns the new time."""
        self.set(self._at + (delta if delta is not None else timedelta(**parts)))
        return self._at

    def __repr__(self) -> str:
        return f"FixedClock({self._at.isoformat()})"
