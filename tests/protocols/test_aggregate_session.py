"""The aggregate sessions (protocols/aggregate.py): two parties in one process, every
message through the real protobuf envelopes, against the plain computation; rounds out
of order, tampered and mismatched messages refused; the release charged as planned.

Noise is a test-only fixed "mechanism" where results must be exact (OpenDP cannot be
seeded; its mechanism is tested in test_he_aggregate.py).
"""
from __future__ import annotations

import pickle
import random
from dataclasses import replace
from fractions import Fraction

import pytest

from protocols import psi_shuffle as ps
from protocols.aggregate import AggregateAnswerer, AggregateAsker, has_repeats
from protocols.dp import EpsilonBudget, ReleasePlan
from protocols.session import ProtocolStateError
from protocols.session import (
    StatisticsAccepted, AggregateSummary, BudgetRefused, InvalidRound, Piece, Unanswerable, split,
)

from .conftest import FixedNoise
from .stats_wire import AGGREGATE, run

ROWS, NAMES = 400, ("天宁区", "钟楼区", "金坛区")
CHUNK = 4096  # small pieces: every large round is cut in several


@pytest.fixture(scope="module")
def data():
    rng = random.Random(7)
    ids = [b"3204%014d" % i for i in range(ROWS)]
    groups = [2 if i % 40 == 0 else i % 2 for i in range(ROWS)]  # group 2 is small
    values = [rng.randrange(50_000) for _ in range(ROWS)]
    asked = rng.sample(ids, 150) + [b"9999%014d" % i for i in range(50)]
    return ids, groups, values, asked, ps.hash_identifiers(ids)


def _plain(data) -> dict[str, tuple[int, int]]:
    ids, groups, values, asked, _ = data
    asked = set(asked)
    return {name: (sum(1 for i, g in zip(ids, groups) if g == k and i in asked),
                   sum(v for i, g, v in zip(ids, groups, values) if g == k and i in asked))
            for k, name in enumerate(NAMES)}


def _sessions(data, *, epsilon=None, with_sums=True, asker_sums=None, elements=None,
              budget=None, min_group_size=1, count_epsilon=None, seed=1):
    ids, groups, values, asked, hashed = data
    plan = ReleasePlan.for_query(epsilon, with_sums, mechanism=FixedNoise)
    asker = AggregateAsker(asked, with_sums=with_sums if asker_sums is None else asker_sums,
                           chunk_bytes=CHUNK, count_epsilon=count_epsilon,
                           rng=random.Random(seed), mechanism=FixedNoise)
    answerer = AggregateAnswerer(
        hashed, values, groups, NAMES, value_bound=50_000, unusable_rows=3,
        elements=len(set(asked)) if elements is None else elements, plan=plan,
        budget=budget or plan.budget("fund", "flexible_workers", 4),
        min_group_size=min_group_size, chunk_bytes=CHUNK, rng=random.Random(seed + 1))
    return asker, answerer


def test_exact_figures_equal_the_plain_computation(data) -> None:
    asker, answerer = _sessions(data, min_group_size=5)
    seen = run(asker, answerer, AGGREGATE)
    assert asker.finished and answerer.finished and asker.outgoing_done
    figures = asker.result()
    plain = _plain(data)
    assert 0 < plain["金坛区"][0] < 5  # small enough to be suppressed
    assert figures.groups["金坛区"].suppressed and figures.groups["金坛区"].total is None
    for name in NAMES[:2]:
        count, total = plain[name]
        got = figures.groups[name]
        assert (got.suppressed, got.count, got.total) == (False, count, total)
        assert got.mean == pytest.approx(total / count)
    assert (figures.rows, figures.unusable_rows, figures.asked) == (ROWS, 3, 200)
    assert figures.summary == AggregateSummary(0, 0, 0, 5, 50_000) == answerer.result()
    assert answerer.elements_answered == 200 and answerer.epsilon_micro == 0
    rounds = [m.round for m in seen["request"]]
    assert rounds.count("match_request") > 1 and rounds[-1] == "masked"  # cut into pieces


def test_noised_release_is_charged_and_bounded_as_planned(data) -> None:
    FixedNoise.count, FixedNoise.total = 2, -300
    asker, answerer = _sessions(data, epsilon="1.5", count_epsilon=1)
    run(asker, answerer, AGGREGATE)
    summary = asker.result().summary
    assert summary.epsilon_micro == answerer.epsilon_micro == 1_500_000
    assert (summary.count_noise_bound, summary.sum_noise_bound) == (2, 300)
    for name, (count, total) in _plain(data).items():
        got = asker.result().groups[name]
        assert (got.count, got.total) == (count + 2, total - 300)


def test_count_only_query_sends_no_values(data) -> None:
    asker, answerer = _sessions(data, with_sums=False)
    seen = run(asker, answerer, AGGREGATE)
    for name, (count, _) in _plain(data).items():
        got = asker.result().groups[name]
        assert (got.count, got.total) == (count, None)
    columns = [m for m in seen["response"] if isinstance(m, Piece) and m.round == "columns"]
    assert sum(m.last for m in columns) == 1 + len(NAMES)  # header, one indicator per group


def test_release_plan_splits_the_epsilon_and_reserves_exactly_it() -> None:
    plan = ReleasePlan.for_query(1.0, with_sums=True)
    assert (plan.epsilon_count, plan.epsilon_sum) == (Fraction(1, 2), Fraction(1, 2))
    assert ReleasePlan.for_query(0.3, with_sums=False).epsilon_count == Fraction(3, 10)
    exact = ReleasePlan.for_query(None, with_sums=True)
    assert (exact.epsilon_count, exact.epsilon_sum, exact.noise_bounds(10**9)) == (0, 0, (0, 0))
    assert exact.budget("p", "d", 1).charge(5) == 0
    budget = plan.budget("p", "d", 1)
    assert budget.total == 1 and budget.remaining == 1
    count_bound, sum_bound = plan.noise_bounds(1000)
    assert 0 < count_bound < sum_bound  # a sum's sensitivity is the value bound


# -- rounds out of order --------------------------------------------------------------


def test_rounds_out_of_order_or_after_the_end_are_refused(data) -> None:
    asker, answerer = _sessions(data)
    with pytest.raises(ProtocolStateError, match="before the session started"):
        answerer.handle(Piece("masked", b"x", True))
    answerer.start()
    with pytest.raises(ProtocolStateError, match="already started"):
        answerer.start()
    with pytest.raises(ProtocolStateError, match="has not finished"):
        answerer.result()
    with pytest.raises(ProtocolStateError, match="expected match_request chunks, got masked"):
        answerer.handle(Piece("masked", b"x", True))
    with pytest.raises(ProtocolStateError, match="after the session failed"):  # spent
        answerer.handle(Piece("match_request", b"x", True))
    asker.start()
    with pytest.raises(ProtocolStateError, match="malformed answer: expected accepted, got summary"):
        asker.handle(AggregateSummary(0, 0, 0, 1, 1))
    asker, answerer = _sessions(data)
    run(asker, answerer, AGGREGATE)
    with pytest.raises(ProtocolStateError, match="after the end of the session"):
        answerer.handle(Piece("masked", b"x", True))
    with pytest.raises(ProtocolStateError, match="malformed answer: expected nothing more, got release"):
        asker.handle(Piece("release", b"x", True))


def _opened(data):
    """Both sessions started, and the fund centre's match request in pieces."""
    asker, answerer = _sessions(data)
    asker.start()
    return asker, answerer, asker.handle(answerer.start()[0])


def test_the_masked_round_waits_for_every_column(data) -> None:
    asker, answerer, pieces = _opened(data)
    for piece in pieces[:-1]:
        assert list(answerer.handle(piece)) == []
    out = iter(answerer.handle(pieces[-1]))  # the match, then the columns as they are sent
    next(out)
    with pytest.raises(ProtocolStateError, match="before every column"):
        answerer.handle(Piece("masked", b"x", True))


def test_a_stream_that_stops_early_is_refused_with_its_round(data) -> None:
    asker, answerer, pieces = _opened(data)
    answerer.handle(pieces[0])
    with pytest.raises(InvalidRound, match="ended before the match_request round"):
        answerer.end_of_stream()
    with pytest.raises(InvalidRound, match="malformed answer: the stream ended before the "
                                           "match_response round"):
        asker.end_of_stream()


# -- tampered messages ------------------------------------------------------------------


def _flip(message: Piece, at: int = 40) -> Piece:
    data = bytearray(message.data)
    data[at % len(data)] ^= 0x80
    return replace(message, data=bytes(data))


def _tamper_first(direction: str, round_name: str, change):
    done = []

    def tamper(d, message):
        if d == direction and not done and isinstance(message, Piece) and message.round == round_name:
            done.append(1)
            return change(message)
        return message
    return tamper


@pytest.mark.parametrize("direction, round_name, side, reason", [
    ("request", "match_request", "answerer", "match request refused"),
    ("response", "match_response", "asker", "sent an answer that is refused"),
    ("response", "columns", "asker", "sent an answer that is refused"),
    ("request", "masked", "answerer", "masked aggregates refused"),
    ("response", "release", "asker", "sent an answer that is refused"),
])
def test_tampered_rounds_are_refused(data, direction, round_name, side, reason) -> None:
    asker, answerer = _sessions(data, with_sums=False)
    change = (lambda m: replace(m, data=m.data[:5] + b"\xff" + m.data[6:])) \
        if round_name == "release" else _flip
    with pytest.raises(InvalidRound, match=reason):
        run(asker, answerer, AGGREGATE, tamper=_tamper_first(direction, round_name, change))
    assert not (asker if side == "asker" else answerer).finished and not asker.finished


def test_a_repeated_element_is_refused_before_any_match_leaves(data) -> None:
    ids, *_ = data
    element = ps.multiply_batch(b"\x05" + b"\0" * 31, ps.hash_batch([ids[0]]), False)
    request = ps.ShuffleRequest(element * 200).to_bytes()
    _, answerer = _sessions(data)
    answerer.start()
    with pytest.raises(InvalidRound, match="repeats an element"):
        answerer.handle(Piece("match_request", request, True))
    assert answerer.elements_answered == 0
    assert has_repeats(element * 2) and not has_repeats(element)


def test_a_round_larger_than_its_limit_is_refused(data) -> None:
    _, answerer = _sessions(data)
    answerer.start()
    with pytest.raises(InvalidRound, match="match_request exceeds"):
        for piece in split("match_request", b"\0" * (32 * 200 + 65), 1024):
            answerer.handle(piece)


# -- mismatches ---------------------------------------------------------------------------


def test_a_request_of_another_size_than_announced_is_refused_by_the_agency(data) -> None:
    asker, answerer = _sessions(data, elements=199)
    with pytest.raises(InvalidRound, match="match request refused"):
        run(asker, answerer, AGGREGATE)
    assert answerer.elements_answered == 0


def test_a_match_over_other_rows_than_announced_is_refused_by_the_fund_centre(data) -> None:
    asker, answerer = _sessions(data)

    def more_rows(direction, message):
        if isinstance(message, StatisticsAccepted):
            return replace(message, rows=ROWS + 1)
        return message
    with pytest.raises(InvalidRound, match="another number of rows than announced"):
        run(asker, answerer, AGGREGATE, tamper=more_rows)


def test_sums_asked_but_not_offered_are_refused_by_the_fund_centre(data) -> None:
    asker, answerer = _sessions(data, with_sums=False, asker_sums=True)
    with pytest.raises(InvalidRound, match="no encrypted values for a sum"):
        run(asker, answerer, AGGREGATE)


def test_a_release_beyond_the_reservation_spends_nothing(data) -> None:
    budget = EpsilonBudget("fund", "flexible_workers", 4, "0.5")
    asker, answerer = _sessions(data, epsilon=1, budget=budget)
    with pytest.raises(BudgetRefused, match="budget exhausted"):
        run(asker, answerer, AGGREGATE)
    assert budget.spent == 0 and answerer.epsilon_micro == 0


def test_noise_too_large_for_the_plaintext_modulus_is_unanswerable(data) -> None:
    FixedNoise.total = 2**60
    asker, answerer = _sessions(data, epsilon=1)
    with pytest.raises(Unanswerable, match="plaintext modulus"):
        run(asker, answerer, AGGREGATE)


# -- what the agency sees, and the secrets ---------------------------------------------


def test_the_agency_sees_the_asked_count_in_fresh_pseudonyms(data) -> None:
    views = []
    for seed in (1, 3):
        asker, answerer = _sessions(data, seed=seed)
        seen = run(asker, answerer, AGGREGATE)
        request = b"".join(m.data for m in seen["request"] if m.round == "match_request")
        views.append(set(ps.ShuffleRequest.from_bytes(request).blinded[i:i + 32]
                         for i in range(0, 32 * 200, 32)))
    assert len(views[0]) == len(views[1]) == 200 and not views[0] & views[1]


def test_sessions_are_neither_printed_nor_pickled(data) -> None:
    for session in _sessions(data):
        assert "hidden" in repr(session)
        with pytest.raises(TypeError):
            pickle.dumps(session)
