"""Cardinality sessions: the rounds of protocols/cardinality.py, one state machine per side.

The Cardinality stream of proto/shuqiao/v1/membership.proto (the arithmetic, who learns
what and why are in protocols/cardinality.py; m asked, N rows, K canaries)::

    fund centre (asker)                               agency (answerer)
    Header(m + D')                --- 1 --->        (the node admits the query first)
                                  <-- 2 ----        Accepted
    Open(P = a*G, D')             --- 3 --->
    ElementBatch(A in chunks)...  --- 3 --->        at most m + D' elements
    Finish                        --- 3 --->        A whole, distinct and valid; D' below N
                                                    and MAX_PADDING; m at least the floor
                                  <-- 4 ----        Key(Q = b*G, N + K), Rows(Y' in chunks)...
    Rows(Y'' in chunks)...        --- 5 --->        at most N + K + D' elements
    Finish                        --- 5 --->        Y'' checked, canaries found: f = c + d'
                                  <-- 6 ----        CountSummary(f + L, bound of L, epsilon)
    c + L = (f + L) - d'

A and the padding are checked before anything is answered, so a bad request costs the
agency nothing; Y' leaves at round 4, so from there on the query is charged however it
ends (``evaluated``, ``epsilon_micro``). The rows the agency counts over come from an
injected ``hashed_rows()`` (the node caches H(y) per dataset version), called only once A
passed its checks; scalar multiplications go through ``mapper``. The floor (the fewest
elements a query must ask besides its padding) and the DP settings are the grant's: the
node passes them in; the noise itself is planned here (protocols/cardinality.py).
"""
from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from protocols import cardinality as card
from protocols.session import ProtocolStateError
from protocols.session import Accepted, BaseSession, ElementBatch, Finish, Header, unexpected

__all__ = ["Header", "Accepted", "Open", "ElementBatch", "Finish", "Key", "Rows", "CountSummary",
           "CountResult", "CardinalityAsker", "CardinalityAnswerer", "InvalidMessage",
           "ProtocolStateError", "SEND"]

InvalidMessage = card.InvalidMessage
SEND = 65536  # elements per Rows chunk from the agency (2 MiB)


@dataclass(frozen=True)
class Open:
    """Fund centre -> agency: P = a*G (the canaries are checked against it) and D'."""

    point: bytes
    padding: int


@dataclass(frozen=True)
class Key:
    """Agency -> fund centre: Q = b*G, and |Y'| = N + K."""

    key: bytes
    rows: int


@dataclass(frozen=True)
class Rows:
    """A chunk of Y' (agency -> fund centre) or of Y'' (fund centre -> agency)."""

    elements: bytes


@dataclass(frozen=True)
class CountSummary:
    """Agency -> fund centre, last: f + L, L's bound, and the epsilon spent (millionths)."""

    count: int
    noise_bound: int
    epsilon_micro: int


@dataclass(frozen=True)
class CountResult:
    """What the fund centre learns: c + L, and how L was drawn (0, 0: an exact count)."""

    count: int
    epsilon_micro: int
    noise_bound: int


class CardinalityAnswerer(BaseSession):
    """The agency's side of one count, from its admitted header on; never reused.

    Args:
        header: the fund centre's first message (its total covers the padding D').
        hashed_rows: returns the packed H(y) of the dataset version's rows.
        floor: the fewest elements a query must ask besides its padding.
        epsilon, delta: the grant's DP settings (epsilon None: an exact count).
        max_batch: announced in Accepted.
        mapper: a ``map`` for the scalar multiplications (the node's process pool).
        rng, draw: shuffles and noise, for tests (see protocols/cardinality.py).
        chunk: elements per Rows message of Y'.
    """

    def __init__(self, header: Header, *, hashed_rows: Callable[[], bytes], floor: int,
                 epsilon: float | None, delta: float, max_batch: int, mapper=map,
                 rng: random.Random | None = None, draw: card.Draw | None = None,
                 chunk: int = SEND) -> None:
        super().__init__()
        if header.total_elements < 1 or chunk < 1:
            raise ValueError("a count asks at least one element")
        self._total, self._hashed_rows, self._floor = header.total_elements, hashed_rows, floor
        self._epsilon, self._delta, self._max, self._mapper = epsilon, delta, max_batch, mapper
        self._rng, self._draw, self._chunk = rng, draw or card._draw, chunk
        self._open: Open | None = None
        self._parts: list[bytes] = []      # A, then Y''
        self._agency: card.AgencyCount | None = None
        self._noise = card.NoisePlan(0, 0, 0.0)
        self._matched = self._evaluated = 0

    @property
    def evaluated(self) -> int:
        """The elements counted over once Y' has left (charged however the query ends)."""
        return self._evaluated

    @property
    def epsilon_micro(self) -> int:
        """The epsilon the release spends (millionths), once Y' has left."""
        return self._noise.epsilon_micro if self._evaluated else 0

    def result(self) -> int:
        """f = c + d', the count before the agency's noise (what the agency learns)."""
        self._check_result()
        return self._matched

    def _start(self) -> list:
        return [Accepted(self._max)]

    def _handle(self, message: object) -> list:
        if self._agency is None:
            return self._request(message)
        if isinstance(message, Finish):
            return self._count()
        if (not isinstance(message, Rows)
                or sum(map(len, self._parts)) + len(message.elements) > 32 * self._agency.reply_size):
            raise InvalidMessage("malformed cardinality reply")
        self._parts.append(message.elements)
        return []

    def _request(self, message: object) -> list:
        if isinstance(message, Open) and self._open is None:
            self._open = message
        elif isinstance(message, ElementBatch) and self._open is not None and message.elements:
            self._parts.append(message.elements)
            if sum(map(len, self._parts)) > 32 * self._total:
                raise InvalidMessage("more elements than announced")
        elif isinstance(message, Finish):
            return self._answer()
        else:
            raise ProtocolStateError("malformed cardinality stream")
        return []

    def _answer(self) -> list:
        """Round 3 checked, round 4 out: Key and Y'."""
        asked, self._parts = b"".join(self._parts), []
        if self._open is None or len(asked) != 32 * self._total:
            raise InvalidMessage("finish before all announced elements and the point")
        if not card.all_distinct(asked):  # one key blinds them all: a repeat is a repeated person
            raise InvalidMessage("the query repeats an element; every element must be distinct")
        rows, padding = self._hashed_rows(), self._open.padding
        if not padding < min(len(rows) // 32, card.MAX_PADDING + 1):
            raise InvalidMessage(
                f"the padding must be below the row count and at most {card.MAX_PADDING}")
        if self._total - padding < self._floor:
            raise InvalidMessage(
                f"a query must ask at least {self._floor} elements besides its padding")
        agency = card.AgencyCount(len(rows) // 32, self._total - padding, padding, rng=self._rng)
        try:
            agency.accept(self._open.point, asked)
        except InvalidMessage:
            raise InvalidMessage("the query holds an invalid group element") from None
        self._noise = card.noise_plan(self._epsilon, self._delta, self._draw)
        q, y = agency.rows_message(rows, mapper=self._mapper)
        self._agency, self._evaluated = agency, self._total  # Y' leaves from here on
        step = 32 * self._chunk
        return [Key(q, len(y) // 32)] + [Rows(y[i:i + step]) for i in range(0, len(y), step)]

    def _count(self) -> list:
        """Round 5 checked, round 6 out: the noised release."""
        try:
            self._matched = self._agency.matches(b"".join(self._parts), mapper=self._mapper)
        except InvalidMessage:
            raise InvalidMessage("the reply is malformed, holds an invalid or repeated element, "
                                 "or was not computed with the announced key") from None
        self._finished = True
        return [CountSummary(self._matched + self._noise.noise, self._noise.bound,
                             self._noise.epsilon_micro)]


class CardinalityAsker(BaseSession):
    """The fund centre's side of one count; never reused. Its own noise d' and padding D'
    are drawn at construction (`padding` and `total_elements` go in the node's header).

    Args:
        identifiers: the encoded identifiers asked, distinct.
        epsilon: this node's own DP for c against the agency (d' and D').
        rows: the agency's row count N (from its dataset listing).
        max_batch: elements per ElementBatch of A and per Rows chunk of Y''.
        mapper: a ``map`` for hashing and scalar multiplications.
        rng, draw: shuffles and noise, for tests.
        progress: called with (Y' elements received, |Y'|).
    """

    def __init__(self, identifiers: Sequence[bytes], *, epsilon: float, rows: int,
                 max_batch: int, mapper=map, rng: random.Random | None = None,
                 draw: card.Draw | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        if max_batch < 1:
            raise ValueError("batches hold at least one element")
        dummies, self.padding = card.fund_centre_noise(epsilon, rows, draw or card._draw)
        self._fund = card.FundCentreCount(identifiers, dummies, self.padding, rng=rng)
        self.total_elements = len(identifiers) + self.padding
        self._step, self._mapper = 32 * max_batch, mapper
        self._progress = progress or (lambda done, total: None)
        self._accepted, self._replied = False, False
        self._key: Key | None = None
        self._rows: list[bytes] = []
        self._summary: CountSummary | None = None

    def result(self) -> CountResult:
        self._check_result("the cardinality answer ended early")
        s = self._summary
        return CountResult(self._fund.count(s.count), s.epsilon_micro, s.noise_bound)

    def _start(self) -> list:
        point, blinded = self._fund.request(mapper=self._mapper)
        batches = [ElementBatch(seq, blinded[i:i + self._step])
                   for seq, i in enumerate(range(0, len(blinded), self._step))]
        return [Header(self.total_elements), Open(point, self.padding), *batches, Finish()]

    def _handle(self, message: object) -> list:
        if isinstance(message, Accepted) and not self._accepted:
            self._accepted = True
        elif isinstance(message, Key) and self._accepted and self._key is None:
            if message.rows < 1:
                raise InvalidMessage()
            self._key = message
        elif isinstance(message, Rows) and self._key is not None and not self._replied:
            return self._take_rows(message)
        elif isinstance(message, CountSummary) and self._replied:
            self._summary, self._finished = message, True
        else:
            raise unexpected(message)
        return []

    def _take_rows(self, message: Rows) -> list:
        """Y' in chunks; once whole, round 5: Y'' in chunks and Finish."""
        self._rows.append(message.elements)
        got, expected = sum(map(len, self._rows)) // 32, self._key.rows
        self._progress(got, expected)
        if got > expected:
            raise InvalidMessage()
        if got < expected:
            return []
        reply = self._fund.reply(self._key.key, b"".join(self._rows), mapper=self._mapper)
        self._replied, self._rows = True, []
        step = self._step
        return [Rows(reply[i:i + step]) for i in range(0, len(reply), step)] + [Finish()]
