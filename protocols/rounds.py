"""Rounds of the streamed statistics sessions: pieces, envelope messages, refusals.

The aggregate and threshold sessions (protocols/aggregate.py,
protocols/threshold_session.py) talk in the messages below, one type per body of
proto/shuqiao/v1/statistics.proto, with the same field names, so the node's gRPC
layer maps them one to one and adds only what belongs to it (query ids, receipts).

A large round carries one protocol message's own bytes (its ``to_bytes()``) cut into
:class:`Piece` s that each fit the transport's message cap; the receiving session
reassembles a round with :class:`Reassembly` and refuses one that is out of turn
(:class:`~protocols.session.ProtocolStateError`), over the size the protocol allows
for it, or cut short (:class:`InvalidRound`).

A session refuses a peer's message with one of the :class:`SessionRefusal` types; the
reason (``str``) names the round and the rule, never an identifier or a value, so the
node may send it to the peer and log it. Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from protocols.session import ProtocolStateError
from protocols.session import BaseSession, ElementBatch

__all__ = [
    "CHUNK_BYTES", "chunk_size", "Piece", "split", "Reassembly", "StatisticsAccepted",
    "ElementBatch", "Evaluated", "AggregateSummary", "ThresholdSummary", "body_of",
    "SessionRefusal", "InvalidRound", "StreamEnded", "BudgetRefused", "Unanswerable",
    "out_of_turn", "Unexpected", "StatisticsSession", "AskerSession", "malformed_answer",
    "refused_answer",
]

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
        """The whole round once its last piece is in, else None.

        Raises:
            ProtocolStateError: ``message`` is not a piece of this round.
            InvalidRound: the round grows past ``limit`` bytes.
        """
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
        """The messages answering ``message``.

        Raises:
            ProtocolStateError: out of turn, or after the end.
            InvalidRound: an answer that is malformed, too large, or refused.
        """
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
