"""The shape of a two-party protocol session, the envelope messages the query kinds share,
and the rounds of the streamed statistics sessions: pieces, envelope messages, refusals.

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

The aggregate and threshold sessions (protocols/aggregate.py,
protocols/threshold_session.py) talk in the messages below, one type per body of
proto/shuqiao/v1/statistics.proto, with the same field names, so the node's gRPC
layer maps them one to one and adds only what belongs to it (query ids, receipts).

A large round carries one protocol message's own bytes (its ``to_bytes()``) cut into
:class:`Piece` s that each fit the transport's message cap; the receiving session
reassembles a round with :class:`Reassembly` and refuses one that is out of turn
(:class:`ProtocolStateError`), over the size the protocol allows
for it, or cut short (:class:`InvalidRound`).

A session refuses a peer's message with one of the :class:`SessionRefusal` types; the
reason (``str``) names the round and the rule, never an identifier or a value, so the
node may send it to the peer and log it. Pure: no I/O, no clock, no randomness.
"""
from __future__ import annotations

from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Protocol

__all__ = ["Header", "Accepted", "ElementBatch", "Finish", "Session", "BaseSession", "Submit",
           "run_now", "unexpected", "ProtocolStateError", "CHUNK_BYTES", "chunk_size", "Piece",
           "split", "Reassembly", "StatisticsAccepted", "Evaluated", "AggregateSummary",
           "ThresholdSummary", "body_of", "SessionRefusal", "InvalidRound", "StreamEnded",
           "BudgetRefused", "Unanswerable", "out_of_turn", "Unexpected", "StatisticsSession",
           "AskerSession", "malformed_answer", "refused_answer"]


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


# -- the rounds of the streamed statistics sessions -------------------------------------

#: Protocol bytes per piece: half the default 8 MiB gRPC cap leaves room for framing.
CHUNK_BYTES = 4 * 1024 * 1024


def chunk_size(max_message_bytes: int) -> int:
    """The piece size a node uses under its transport's message cap."""
    return max(64 * 1024, min(CHUNK_BYTES, max_message_bytes // 2))


# --- refusals -----------------------------------------------------------------------

class SessionRefusal(Exception):
    """The session refuses the peer's message and the query ends."""


class InvalidRound(SessionRefusal, ValueError):
    """The peer's message is malformed, larger than its round allows, cut short, or
    fails the protocol's checks."""


class StreamEnded(SessionRefusal):
    """The peer's stream stopped between rounds, before the session was complete."""


class BudgetRefused(SessionRefusal):
    """The release would spend more differential privacy than the query was given."""


class Unanswerable(SessionRefusal):
    """The data cannot be answered under the protocol's parameters (noise too large
    for the plaintext modulus, say): nothing the peer can fix by asking again."""


def body_of(message: object) -> str:
    """The message's body in the proto (a piece's: its round), as a reason names it."""
    if message is None:
        return "the end of the stream"
    if isinstance(message, Piece):
        return message.round
    if isinstance(message, Unexpected):
        return message.body
    return BODIES.get(type(message), "nothing")


def out_of_turn(expected: str, message: object) -> ProtocolStateError:
    return ProtocolStateError(f"expected {expected}, got {body_of(message)}")


# --- pieces of a round --------------------------------------------------------------

@dataclass(frozen=True)
class Piece:
    """One piece of a round's bytes (``StatisticsChunk``); ``last`` closes the round."""
    round: str
    data: bytes
    last: bool


def split(round_name: str, data: bytes, size: int) -> list[Piece]:
    """``data`` as pieces of at most ``size`` bytes; at least one (an empty round is a round)."""
    if size < 1:
        raise ValueError("pieces need a positive size")
    view = memoryview(data)
    return [Piece(round_name, bytes(view[start:start + size]), start + size >= len(data))
            for start in range(0, max(len(data), 1), size)]


class Reassembly:
    """Collects a round's pieces, at most ``limit`` bytes in all; then the next round
    of the same name (a column after a column)."""

    __slots__ = ("round", "limit", "_parts", "_size")

    def __init__(self, round_name: str, limit: int) -> None:
        self.round, self.limit = round_name, limit
        self._parts: list[bytes] = []
        self._size = 0

    def add(self, message: object) -> bytes | None:
        """The whole round once its last piece is in, else None. Raises ProtocolStateError
        (``message`` is not a piece of this round) or InvalidRound (past ``limit`` bytes)."""
        if not isinstance(message, Piece) or message.round != self.round:
            raise out_of_turn(f"{self.round} chunks", message)
        self._size += len(message.data)
        if self._size > self.limit:
            raise InvalidRound(f"{self.round} exceeds {self.limit} bytes")
        self._parts.append(message.data)
        if not message.last:
            return None
        data, self._parts, self._size = b"".join(self._parts), [], 0
        return data  # the next round of the same name starts afresh

    def cut_short(self) -> InvalidRound:
        """The refusal for a stream that ended inside this round."""
        return InvalidRound(f"the stream ended before the {self.round} round was complete")


# --- the envelope messages ------------------------------------------------------------

@dataclass(frozen=True)
class StatisticsAccepted:
    """Answerer -> asker, once admitted: the parameters of the rounds that follow."""
    rows: int                   # answerer rows taking part (those with a usable value)
    unusable_rows: int          # rows left out: the value is not an integer in range
    max_chunk_bytes: int        # the asker sends pieces of at most this size
    max_batch_elements: int = 0  # threshold: blinded elements per batch, at most


@dataclass(frozen=True)
class Evaluated:
    """Answerer -> asker (threshold): k * B_i for one :class:`ElementBatch` of blinded
    elements (RFC 9497); VOPRF: one DLEQ proof over the batch."""
    seq: int
    elements: bytes
    proof: bytes = b""


@dataclass(frozen=True)
class AggregateSummary:
    """Answerer -> asker, last: what the release cost and how far its noise may reach."""
    epsilon_micro: int          # differential privacy charged (millionths); 0: exact
    count_noise_bound: int      # |noise| on a count exceeds this with probability <= 2^-64
    sum_noise_bound: int        # same for a sum (0 without sums or without DP)
    min_group_size: int         # groups whose (noised) count is below this are suppressed
    value_bound: int            # largest value a row may contribute


@dataclass(frozen=True)
class ThresholdSummary:
    """Answerer -> asker, last: the number of comparisons answered."""
    entries: int


@dataclass(frozen=True)
class Unexpected:
    """A message no statistics session takes (a second header, an empty body), handed
    to the session all the same, so that its refusal names what came."""
    body: str


#: The proto body (oneof field) of each message; the threshold batch is protocols/
#: session.py's ElementBatch, as in the membership rounds.
BODIES = {StatisticsAccepted: "accepted", ElementBatch: "batch", Evaluated: "evaluated",
          AggregateSummary: "summary", ThresholdSummary: "summary"}


# --- what every statistics session shares ------------------------------------------------

class StatisticsSession(BaseSession):
    """The shape of protocols/session.py, plus what the statistics streams need.

    ``handle`` may return a lazy iterable (a long round produced as it is sent);
    ``end_of_stream()`` raises the refusal for a peer that stopped early. Answerers
    keep ``elements_answered`` (elements whose answer has been produced: charged from
    then on, however the query ends) and ``epsilon_micro`` (differential privacy
    spent); askers set ``outgoing_done`` once their last message is out. A session
    holds per-query secrets, so it is neither printed nor pickled.
    """

    def __init__(self) -> None:
        super().__init__()
        self._stage = "new"
        self._outcome: object = None
        self.elements_answered = 0
        self.epsilon_micro = 0
        self.outgoing_done = False

    def result(self):
        self._check_result()
        return self._outcome

    def end_of_stream(self) -> None:
        """Raises the refusal for a peer whose stream ended before this session did."""
        self._spent = True
        raise self._ended()

    def _ended(self) -> Exception:
        raise NotImplementedError

    def _finish(self, outcome: object) -> None:
        self._stage, self._outcome, self._finished = "done", outcome, True

    def __repr__(self) -> str:
        return f"<{type(self).__name__} stage={self._stage} secrets hidden>"

    def _refuse_copy(self, *_: object) -> None:
        raise TypeError(f"{type(self).__name__} holds per-query secrets; it is not copyable")

    __reduce__ = __reduce_ex__ = __getstate__ = __copy__ = __deepcopy__ = _refuse_copy


def malformed_answer(exc: ProtocolStateError | InvalidRound) -> ProtocolStateError | InvalidRound:
    """An asker's reason, read as what the answerer did (the node names the partner)."""
    return type(exc)(f"sent a malformed answer: {exc}")


def refused_answer(exc: Exception) -> InvalidRound:
    """An answer the protocol's checks refuse, in the asker's words."""
    return InvalidRound(f"sent an answer that is refused: {exc}")


class AskerSession(StatisticsSession):
    """The asking side's dispatch: per stage either one whole message
    (``_message_steps``) or the bytes of a reassembled round (``_round_steps``, pieces
    collected in ``_round``). Every refusal reads as what the answerer sent."""

    def __init__(self) -> None:
        super().__init__()
        self._round: Reassembly | None = None

    def _message_steps(self) -> dict[str, Callable[[object], list]]:
        raise NotImplementedError

    def _round_steps(self) -> dict[str, Callable[[bytes], list]]:
        raise NotImplementedError

    def _handle(self, message: object) -> list:
        """The messages answering ``message``. Raises ProtocolStateError (out of turn, or
        after the end) or InvalidRound (an answer malformed, too large, or refused)."""
        step = self._message_steps().get(self._stage)
        if step is not None:
            return step(message)
        if self._round is None:
            raise malformed_answer(out_of_turn("nothing more", message))
        try:
            data = self._round.add(message)
        except (ProtocolStateError, InvalidRound) as exc:
            raise malformed_answer(exc) from None
        return [] if data is None else self._round_steps()[self._stage](data)

    def _ended(self) -> Exception:
        if self._round is not None:
            return malformed_answer(self._round.cut_short())
        return malformed_answer(out_of_turn(self._stage, None))

    def _after_end(self, message: object) -> list:
        raise malformed_answer(out_of_turn("nothing more", message))
