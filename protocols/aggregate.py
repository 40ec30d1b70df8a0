"""Grouped count / sum / mean over a private intersection: the two sessions of a query.

The rounds of protocols/psi_shuffle.py (a shuffled match: the fund centre learns a 0/1
selection over the agency's shuffled rows) then of protocols/he_aggregate.py (the
agency's values BFV-encrypted in that order; the fund centre selects, adds and masks;
the agency decrypts masked totals, noises with OpenDP's discrete Laplace under a
:class:`protocols.dp.ReleasePlan`, suppresses small groups, releases), as two state
machines in the messages of protocols/session.py::

    fund centre (AggregateAsker)                agency (AggregateAnswerer)
    start(): blind its identifiers              start(): StatisticsAccepted(rows,
    <- StatisticsAccepted                       chunk size)
    -> match_request pieces                     ShuffleRequest: every element valid
                                                and distinct, exactly as many as asked
    <- match_response pieces                    ShuffleResponse
    <- columns pieces                           EncryptedColumns header, then one round
                                                per (group, quantity) column
    -> masked pieces                            MaskedAggregates
    <- release pieces, AggregateSummary         AggregateRelease, epsilon and bounds

Who learns what (details in the two protocol modules): the fund centre learns the
number of rows taking part, the group names, per group a noised (or, without DP,
exact) count, sum and mean or "suppressed", and its software the exact size of the
whole intersection; the agency learns how many elements were asked and the per-group
counts blurred by the fund centre's own noise (``count_epsilon``). Neither sees a
single value or learns which identifier matched.

No network, storage or clock; randomness comes from ``rng`` (tests) or the OS CSPRNG,
SEAL's own for BFV, OpenDP's for noise; heavy batches go through ``mapper``.
TenSEAL loads with this module.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from protocols import he_aggregate as ha
from protocols import psi_shuffle as ps
from protocols.dp import BudgetExhausted, DiscreteLaplace, EpsilonBudget, ReleasePlan, Unmetered
from protocols.session import (
    AggregateSummary, AskerSession, BudgetRefused, InvalidRound, Piece, Reassembly,
    StatisticsAccepted, StatisticsSession, malformed_answer, refused_answer,
    Unanswerable, out_of_turn, split,
)

__all__ = ["MAX_HEADER_BYTES", "MAX_CIPHERTEXT_BYTES", "MAX_RELEASE_BYTES", "AggregateFigures",
           "AggregateAsker", "AggregateAnswerer", "has_repeats"]

MAX_HEADER_BYTES = 64 * 2**20   # the BFV public context (~0.5 MB) and the group names
MAX_CIPHERTEXT_BYTES = 2**20    # one BFV ciphertext, n = 8192, 4 x 50 bits: ~0.5 MB at most
MAX_RELEASE_BYTES = 2**20
Mapper = Callable[..., Iterable]
Progress = Callable[[str, int, "int | None"], None]


def _noop(stage: str, done: int, total: int | None) -> None:
    pass


def has_repeats(packed: bytes, width: int = 32) -> bool:
    """Whether the packed ``width``-byte elements hold any element twice.

    One key blinds all of a match request's elements, so a repeated element is a
    repeated person: counted again, it would inflate the query's size past the policy's
    minimum and amplify the figures through the noise.
    """
    if width % 8 or len(packed) % width:
        raise ValueError("packed elements must be whole multiples of 8 bytes")
    rows = np.frombuffer(packed, dtype="<u8").reshape(-1, width // 8)
    return len(np.unique(rows, axis=0)) != len(rows)


@dataclass(frozen=True)
class AggregateFigures:
    """The fund centre's result: per group name its figures or "suppressed"."""

    groups: dict[str, ha.GroupAggregate]
    summary: AggregateSummary
    rows: int               # agency rows taking part (with a usable value)
    unusable_rows: int      # agency rows left out (value not an integer in range)
    asked: int


# --- the fund centre ----------------------------------------------------------------


class AggregateAsker(AskerSession):
    """The fund centre's side of one aggregate query; single use.

    Args:
        identifiers: encoded identifiers (duplicates are asked once).
        with_sums: sums (and means) are asked, not only counts.
        count_epsilon: epsilon of this side's own noise on the per-group counts the
            agency sees for suppression (subtracted again here); None shows it exact ones.
        chunk_bytes: the largest piece this side sends (the agency may ask for less).
    """

    def __init__(self, identifiers: Iterable[bytes], *, with_sums: bool, chunk_bytes: int,
                 count_epsilon: Fraction | int | str | float | None = 1,
                 rng: random.Random | None = None, mapper: Mapper = map,
                 progress: Progress = _noop, columns_per_task: int = 3,
                 mechanism: Callable[[int, Fraction], DiscreteLaplace] = DiscreteLaplace) -> None:
        super().__init__()
        asked = sorted(set(identifiers))
        self._matcher = ps.FundCentreMatcher(asked, rng=rng, mapper=mapper)
        self.elements = len(asked)
        self._with_sums, self._chunk_bytes = with_sums, chunk_bytes
        self._evaluator_args = dict(count_epsilon=count_epsilon, rng=rng, mapper=mapper,
                                    mechanism=mechanism, columns_per_task=columns_per_task)
        self._per_batch = 2 * columns_per_task  # two mapper tasks' worth per batch
        self._progress = progress
        self._request = b""
        self._columns: list[list[bytes]] = []

    def _start(self) -> list:
        """Blind the identifiers now, so nothing waits on an open stream."""
        m = self.elements
        self._progress("blind", 0, m)
        self._request = self._matcher.request().to_bytes()
        self._progress("blind", m, m)
        self._stage = "accepted"
        return []

    def _message_steps(self) -> dict:
        return {"accepted": self._accepted, "summary": self._summary}

    def _round_steps(self) -> dict:
        return {"match_response": self._selection, "columns_header": self._columns_header,
                "columns": self._column, "release": self._release}

    def _accepted(self, message: object) -> list:
        if not isinstance(message, StatisticsAccepted):
            raise malformed_answer(out_of_turn("accepted", message))
        self._accepted_rows = message
        size = min(self._chunk_bytes, message.max_chunk_bytes or 2**20)
        self._stage = "match_response"
        self._round = Reassembly("match_response", 32 * (self.elements + message.rows) + 64)
        return split("match_request", self._request, size)

    def _selection(self, data: bytes) -> list:
        try:
            self._selected = self._matcher.select(ps.ShuffleResponse.from_bytes(data))
        except ps.InvalidMessage as exc:
            raise refused_answer(exc) from None
        if len(self._selected) != self._accepted_rows.rows:
            raise InvalidRound("matched against another number of rows than announced")
        self._progress("match", 1, 1)
        self._stage, self._round = "columns_header", Reassembly("columns", MAX_HEADER_BYTES)
        return []

    def _columns_header(self, data: bytes) -> list:
        try:
            offered = ha.EncryptedColumns.from_bytes(data)
            if self._with_sums and not offered.sums:
                raise InvalidRound("sent no encrypted values for a sum")
            self._evaluator = ha.FundCentreAggregator(self._selected, **self._evaluator_args)
            self._blocks, self._k = self._evaluator.open_columns(offered)
        except ha.AggregateError as exc:
            raise refused_answer(exc) from None
        self._summed = 0
        self._stage = "columns"
        self._round = Reassembly("columns", self._blocks * MAX_CIPHERTEXT_BYTES + 64)
        return []

    def _column(self, data: bytes) -> list:
        """Columns are summed a few at a time as they arrive: memory holds a few."""
        ev = self._evaluator
        try:
            self._columns.append(ha.unpack_column(data))
            self._summed += 1
            self._progress("aggregate", self._summed, self._k)
            if len(self._columns) == self._per_batch or self._summed == self._k:
                batch, self._columns = self._columns, []
                ev.add_columns(batch)
            if self._summed < self._k:
                return []
            masked = ev.close_columns().to_bytes()
        except ha.AggregateError as exc:
            raise refused_answer(exc) from None
        self._stage, self._round = "release", Reassembly("release", MAX_RELEASE_BYTES)
        self.outgoing_done = True
        size = min(self._chunk_bytes, self._accepted_rows.max_chunk_bytes or 2**20)
        return split("masked", masked, size)

    def _release(self, data: bytes) -> list:
        try:
            self._groups = self._evaluator.result(ha.AggregateRelease.from_bytes(data))
        except ha.AggregateError as exc:
            raise refused_answer(exc) from None
        self._stage, self._round = "summary", None
        return []

    def _summary(self, message: object) -> list:
        if not isinstance(message, AggregateSummary):
            raise malformed_answer(out_of_turn("summary", message))
        accepted = self._accepted_rows
        self._finish(AggregateFigures(self._groups, message, accepted.rows,
                                      accepted.unusable_rows, self.elements))
        return []


# --- the agency ---------------------------------------------------------------------


class AggregateAnswerer(StatisticsSession):
    """The agency's side of one admitted aggregate query; single use.

    Args:
        hashed_rows: packed H(y) of the rows taking part (psi_shuffle.hash_identifiers).
        values, groups, group_names: per row its value and group index; the names.
        value_bound: the public largest value a row may add (a sum's sensitivity).
        unusable_rows: rows left out (reported to the asker, as a count).
        elements: the number of elements the asker announced; exactly these are answered.
        plan: what the release is charged and how it is noised.
        budget: what may be charged (the node's reservation, :meth:`ReleasePlan.budget`).
        min_group_size: groups whose noised count is below this are suppressed.
        chunk_bytes: the largest piece either side sends.
    """

    def __init__(self, hashed_rows: bytes, values: Sequence[int], groups: Sequence[int],
                 group_names: Sequence[str], *, value_bound: int, unusable_rows: int,
                 elements: int, plan: ReleasePlan, budget: EpsilonBudget | Unmetered,
                 min_group_size: int, chunk_bytes: int, rng: random.Random | None = None,
                 mapper: Mapper = map, columns_at_once: int = 2) -> None:
        super().__init__()
        self._shuffler = ps.AgencyShuffler(hashed_rows, rng=rng, mapper=mapper)
        self._rows = (values, groups, tuple(group_names))
        self._value_bound, self._unusable = value_bound, unusable_rows
        self._m, self._plan, self._budget = elements, plan, budget
        self._min_group_size, self._chunk = min_group_size, chunk_bytes
        self._mapper, self._columns_at_once = mapper, columns_at_once
        self._round: Reassembly | None = None

    def _start(self) -> list:
        self._stage, self._round = "match_request", Reassembly("match_request", 32 * self._m + 64)
        return [StatisticsAccepted(rows=len(self._rows[0]), unusable_rows=self._unusable,
                         max_chunk_bytes=self._chunk)]

    def _ended(self) -> Exception:
        if self._round is not None:
            return self._round.cut_short()
        return out_of_turn(self._stage, None)

    def _handle(self, message: object) -> Iterable:
        """The messages answering ``message``; the columns are produced as they are sent.

        Raises:
            ProtocolStateError: out of turn (the masked round before every column went
                out, say), or after the end.
            InvalidRound: a malformed, oversized or refused round.
            BudgetRefused, Unanswerable: the release cannot be made.
        """
        if self._round is None:
            raise out_of_turn("nothing before every column went out", message)
        if isinstance(message, Piece) and message.round == "match_request":
            self._shuffler.prepare()  # no-op after the first: overlaps the asker's sending
        data = self._round.add(message)
        if data is None:
            return []
        return self._match(data) if self._stage == "match_request" else self._release(data)

    def _match(self, data: bytes) -> Iterator:
        try:
            request = ps.ShuffleRequest.from_bytes(data)
            if len(request.blinded) % 32 == 0 and has_repeats(request.blinded):
                raise InvalidRound("match request refused: it repeats an element; every "
                                   "element must be distinct")
            response = self._shuffler.respond(request, min_elements=self._m,
                                              max_elements=self._m)
        except ps.InvalidMessage as exc:
            raise InvalidRound(f"match request refused: {exc}") from None
        self.elements_answered = self._m  # the match leaves now: charged however it ends
        self._stage, self._round = "offering", None
        values, groups, names = self._rows
        with_sums = self._plan.with_sums
        self._aggregator = ha.AgencyAggregator(
            values, groups, names, self._shuffler.permutation, value_bound=self._value_bound,
            with_sums=with_sums, mapper=self._mapper)
        header, columns = self._aggregator.offer_columns(columns_at_once=self._columns_at_once)
        return itertools.chain(split("match_response", response.to_bytes(), self._chunk),
                               split("columns", header.to_bytes(), self._chunk),
                               self._offer(columns))

    def _offer(self, columns: Iterator[list[bytes]]) -> Iterator:
        """One round per column; the masked round is awaited once the last went out."""
        widest = 0
        for column in columns:
            widest = max(widest, *map(len, column))
            yield from split("columns", ha.pack_column(column), self._chunk)
        agg = self._aggregator
        per_group = 1 + (agg.limbs if self._plan.with_sums else 0)
        limit = 2 * widest * per_group * len(agg.group_names) + 1024
        self._stage, self._round = "masked", Reassembly("masked", limit)

    def _release(self, data: bytes) -> list:
        plan = self._plan
        try:
            release = self._aggregator.release(
                ha.MaskedAggregates.from_bytes(data), budget=self._budget,
                epsilon_count=plan.epsilon_count, epsilon_sum=plan.epsilon_sum,
                min_group_size=self._min_group_size, mechanism=plan.noise)
        except BudgetExhausted as exc:
            raise BudgetRefused(str(exc)) from None
        except ha.InvalidCiphertext as exc:
            raise InvalidRound(f"masked aggregates refused: {exc}") from None
        except ha.AggregateError as exc:
            raise Unanswerable(str(exc)) from None
        self.epsilon_micro = round(release.epsilon * 10**6)
        count_bound, sum_bound = plan.noise_bounds(self._value_bound)
        summary = AggregateSummary(
            epsilon_micro=self.epsilon_micro, count_noise_bound=count_bound,
            sum_noise_bound=sum_bound, min_group_size=self._min_group_size,
            value_bound=self._value_bound)
        self._round = None
        self._finish(summary)
        return [*split("release", release.to_bytes(), self._chunk), summary]
