"""The shape of a two-party protocol session, and the envelope messages the query kinds share.

A session is one party's side of one query, as a pure state machine (the shape of
google/private-join-and-compute's protocol objects)::

    start()          -> the messages this party sends first
    handle(message)  -> the messages it sends in answer
    finished         -> True once the party has nothing left to send or check
    result()         -> what the party learns (ProtocolStateError before it is finished)

Sessions do no I/O and read no clock. Randomness comes from libsodium's CSPRNG (scalars
and pads) or OpenDP's sampler (noise) unless a test injects it; expensive batch work goes
through an injected ``mapper`` (a ``map``) or ``submit`` (an ``Executor.submit``), so the
node can spread it over its process pool. Messages are frozen dataclasses of plain
values (ints, bytes, tuples): the node's gRPC services and clients are adapters that
convert them to and from proto/shuqiao/v1 messages, and apply policy (admission, quotas,
ledger) around the session. A message arriving in the wrong round, twice, or after the
end raises :class:`ProtocolStateError`, the one error every protocol shares; a malformed
one, the protocol's own opaque error (what a remote party may learn differs per
protocol). Either way the session is spent: the query ends there.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Protocol

__all__ = ["Header", "Accepted", "ElementBatch", "Finish", "Session", "BaseSession", "Submit",
           "run_now", "unexpected", "ProtocolStateError"]


class ProtocolStateError(RuntimeError):
    """A step was called, or a peer's message arrived, out of order, twice or after the end.

    The node's adapters answer it as a refusal of the stream (gRPC INVALID_ARGUMENT);
    its message names the round, never a value.
    """


#: ``submit(fn, *args) -> Future`` (``Executor.submit``); fn and args are picklable.
Submit = Callable[..., "Future[Any]"]


@dataclass(frozen=True)
class Header:
    """Asker -> answerer, first: the number of elements the asker will send in all.

    The node's header also names the query, dataset, version, epoch and purpose; those
    are for admission (policy), so the adapter keeps them and the session sees this.
    """

    total_elements: int


@dataclass(frozen=True)
class Accepted:
    """Answerer -> asker, once the node admitted the query: its largest batch."""

    max_batch_elements: int


@dataclass(frozen=True)
class ElementBatch:
    """A numbered batch of packed 32-byte ristretto255 encodings (either direction)."""

    seq: int
    elements: bytes


@dataclass(frozen=True)
class Finish:
    """Asker -> answerer: nothing more in this round."""


class Session(Protocol):
    def start(self) -> list: ...

    def handle(self, message: object) -> list: ...

    @property
    def finished(self) -> bool: ...

    def result(self) -> object: ...


class BaseSession:
    """Round bookkeeping of the sessions in protocols/: ``start`` once, then ``handle``
    until finished. Any error spends the session: every later message is refused, and
    so is ``result``. Subclasses write ``_start``, ``_handle`` and, if the peer may
    still send something once this party is finished, ``_after_end``."""

    def __init__(self) -> None:
        self._started = self._finished = self._spent = False

    @property
    def finished(self) -> bool:
        return self._finished

    def start(self) -> list:
        if self._started:
            raise ProtocolStateError("the session was already started")
        self._started = True
        return self._guarded(self._start)

    def handle(self, message: object) -> list:
        if not self._started:
            raise ProtocolStateError("a message before the session started")
        if self._spent:
            raise ProtocolStateError("a message after the session failed")
        return self._guarded(self._after_end if self._finished else self._handle, message)

    def _guarded(self, step: Callable[..., list], *args: object) -> list:
        try:
            return step(*args)
        except Exception:
            self._spent = True
            raise

    def _check_result(self, early: str = "the session has not finished") -> None:
        if self._spent:
            raise ProtocolStateError("the session failed")
        if not self._finished:
            raise ProtocolStateError(early)

    def _start(self) -> list:
        raise NotImplementedError

    def _handle(self, message: object) -> list:
        raise NotImplementedError

    def _after_end(self, message: object) -> list:
        raise ProtocolStateError("a message after the end of the session")


def run_now(fn: Callable[..., Any], *args: Any) -> Future:
    """``Executor.submit`` in the calling thread: the default ``submit`` of a session."""
    future: Future = Future()
    try:
        future.set_result(fn(*args))
    except Exception as exc:  # delivered through the future, as from a worker
        future.set_exception(exc)
    return future


def unexpected(message: object) -> ProtocolStateError:
    """The error for a message of a kind this round does not take (names its type only)."""
    return ProtocolStateError(f"sent an unexpected {type(message).__name__} message")
