"""Cardinality sessions, fund centre and agency in one process with every message over a
byte wire: full runs (exact and noised), the noise plans, wrong-round and after-the-end
messages, tampered requests and replies (and which of them are charged), a mismatch
that fails on both sides, and what each side is sent."""
from __future__ import annotations

import math
import random

import pytest

from protocols import cardinality as card
from protocols import cardinality_session as cs
from protocols import group
from protocols.dp import DiscreteLaplace
from protocols.session import ProtocolStateError

from .wire import Link

TYPES = (cs.Header, cs.Accepted, cs.Open, cs.ElementBatch, cs.Finish, cs.Key, cs.Rows,
         cs.CountSummary)
ROWS = [b"row-%d" % i for i in range(120)]
ASKED = ROWS[:25] + [b"absent-%d" % i for i in range(20)]
HASHED = card.hash_batch(ROWS)


def zero(laplace) -> int:
    return 0


def fund(inputs=ASKED, draw=zero, **kw):
    kw = {"epsilon": 1.0, "rows": len(ROWS), "max_batch": 7, "rng": random.Random(3), **kw}
    return cs.CardinalityAsker(inputs, draw=draw, **kw)


def agency_for(epsilon=None, draw=zero, floor=10, chunk=50, hashed=HASHED, calls=None):
    def make(header):
        def rows():
            if calls is not None:
                calls.append(1)
            return hashed
        return cs.CardinalityAnswerer(header, hashed_rows=rows, floor=floor, epsilon=epsilon,
                                      delta=1e-9, max_batch=7, draw=draw, chunk=chunk)
    return make


def link(asker=None, make=None, tamper=None) -> Link:
    return Link(asker or fund(), make or agency_for(), TYPES, tamper)


# -- full runs ------------------------------------------------------------------------------

def test_exact_count_and_what_each_side_learns():
    run = link()
    asker = run.asker
    dummies = asker._fund.dummies
    assert 0 < dummies <= asker.padding < len(ROWS) and asker.total_elements == 45 + asker.padding
    assert run.answerer.finished and run.answerer.result() == 25 + dummies  # the agency: c + d'
    assert asker.finished and asker.result() == cs.CountResult(25, 0, 0)   # the fund centre: c
    assert run.answerer.evaluated == asker.total_elements and run.answerer.epsilon_micro == 0
    sent_to_fund = {type(m) for d, m in run.log if d == "asker"}
    assert sent_to_fund == {cs.Accepted, cs.Key, cs.Rows, cs.CountSummary}
    (key,) = run.received("asker", cs.Key)
    k = card.canaries(len(ROWS))
    assert key.rows == len(ROWS) + k
    assert [len(r.elements) // 32 for r in run.received("asker", cs.Rows)] == [50, 50, 50, 2]
    a_batches = run.received("answerer", cs.ElementBatch)
    assert [b.seq for b in a_batches] == list(range(len(a_batches)))
    assert all(len(b.elements) <= 32 * 7 for b in a_batches)
    replies = run.received("answerer", cs.Rows)
    assert sum(len(r.elements) for r in replies) == 32 * (len(ROWS) + k + asker.padding)


def test_noised_release_spends_the_grants_epsilon():
    run = link(make=agency_for(epsilon=0.5, draw=lambda laplace: 3))
    result = run.asker.result()
    assert result.count == 25 + 3 and result.epsilon_micro == 500_000
    assert result.noise_bound == math.ceil(DiscreteLaplace(2, 0.5).scale * math.log(1e9))
    assert run.answerer.epsilon_micro == 500_000


def test_progress_reports_the_rows_received():
    seen = []
    Link(fund(progress=lambda d, t: seen.append((d, t))), agency_for(), TYPES)
    total = len(ROWS) + card.canaries(len(ROWS))
    assert seen == [(50, total), (100, total), (150, total), (total, total)]


def test_noise_plans_are_clamped_and_exact_without_epsilon():
    assert card.noise_plan(None, 1e-9) == card.NoisePlan(0, 0, 0.0)
    plan = card.noise_plan(1.0, 1e-9, lambda laplace: 10**9)
    assert plan.noise == plan.bound > 0 and plan.epsilon_micro == 1_000_000
    assert card.noise_plan(1.0, 1e-9, lambda laplace: -10**9).noise == -plan.bound
    assert abs(card.noise_plan(1.0, 1e-9).noise) <= plan.bound  # OpenDP's own draw
    assert card.fund_centre_noise(1.0, 120, zero) == (21, 42)  # shift ceil(ln(1e9)) = 21
    dummies, padding = card.fund_centre_noise(1.0, 20, lambda laplace: 10**9)
    assert dummies == padding == 18                                  # below the row count
    assert card.fund_centre_noise(0.001, 10**7, lambda laplace: -10**9) == (0, card.MAX_PADDING)
    assert card.fund_centre_noise(1.0, 1) == (0, 0)


# -- round order ------------------------------------------------------------------------------

def started_agency(total=45, **kw):
    agency = agency_for(**kw)(cs.Header(total))
    agency.start()
    return agency


@pytest.mark.parametrize("case", ["rows-first", "batch-before-open", "open-twice", "header"])
def test_agency_refuses_request_messages_out_of_round(case):
    asker = fund()
    header, opened, *batches, finish = asker.start()
    agency = started_agency(header.total_elements)
    sequence = {"rows-first": [cs.Rows(batches[0].elements)], "batch-before-open": [batches[0]],
                "open-twice": [opened, opened], "header": [opened, header]}[case]
    for message in sequence[:-1]:
        agency.handle(message)
    with pytest.raises(ProtocolStateError, match="malformed cardinality stream"):
        agency.handle(sequence[-1])
    with pytest.raises(ProtocolStateError):
        agency.handle(finish)  # spent


def test_agency_refuses_messages_before_start_and_after_the_end():
    run = link()
    with pytest.raises(ProtocolStateError):
        run.answerer.handle(cs.Finish())
    with pytest.raises(ProtocolStateError):
        agency_for()(cs.Header(45)).handle(cs.Finish())
    with pytest.raises(ProtocolStateError):
        started_agency().result()


@pytest.mark.parametrize("case", ["key-before-accepted", "rows-before-key", "summary-before-reply",
                                  "accepted-twice", "key-twice", "after-the-end"])
def test_fund_centre_refuses_messages_out_of_round(case):
    run = link()
    key, rows = run.received("asker", cs.Key)[0], run.received("asker", cs.Rows)[0]
    summary = run.received("asker", cs.CountSummary)[0]
    asker = fund()
    asker.start()
    sequence = {"key-before-accepted": [key], "rows-before-key": [cs.Accepted(7), rows],
                "summary-before-reply": [cs.Accepted(7), key, summary],
                "accepted-twice": [cs.Accepted(7), cs.Accepted(7)],
                "key-twice": [cs.Accepted(7), key, key]}.get(case)
    if sequence is None:
        asker, sequence = run.asker, [rows]
    for message in sequence[:-1]:
        asker.handle(message)
    with pytest.raises(ProtocolStateError):
        asker.handle(sequence[-1])


def test_fund_centre_result_waits_for_the_summary():
    asker = fund()
    asker.start()
    asker.handle(cs.Accepted(7))
    with pytest.raises(ProtocolStateError, match="ended early"):
        asker.result()


# -- tampered messages ----------------------------------------------------------------------

def tamper_request(case: str):
    def tamper(direction, m):
        if direction == "answerer" and isinstance(m, cs.ElementBatch) and m.seq == 0:
            e = m.elements
            return cs.ElementBatch(0, {
                "repeat": e[:-32] + e[:32], "invalid": e[:-32] + b"\xff" * 32,
                "more": e + card._pads(1), "fewer": e[:-32]}.get(case, e))
        if direction == "answerer" and isinstance(m, cs.Open) and case == "bad-point":
            return cs.Open(b"\x00" * 32, m.padding)
        return m
    return tamper


@pytest.mark.parametrize("case, expect", [
    ("repeat", "repeats an element"), ("invalid", "invalid group element"),
    ("more", "more elements than announced"), ("fewer", "finish before all announced"),
    ("bad-point", "invalid group element")])
def test_tampered_request_is_refused_uncharged_before_the_rows_are_hashed(case, expect):
    calls = []
    with pytest.raises(card.InvalidMessage, match=expect):
        link(make=agency_for(calls=calls), tamper=tamper_request(case))
    # The repeat, size and point checks need no rows; the invalid elements are found after.
    assert calls == ([1] if case in ("invalid", "bad-point") else [])


def test_padding_and_floor_are_checked_against_the_rows_and_the_grant():
    small = [b"row-%d" % i for i in range(8)]
    with pytest.raises(card.InvalidMessage, match="padding must be below the row count"):
        link(make=agency_for(hashed=card.hash_batch(small)))  # padding chosen for 120 rows
    with pytest.raises(card.InvalidMessage, match="at least 50 elements besides its padding"):
        link(make=agency_for(floor=50))                       # 45 asked, plus the padding


def keeping(make, kept: list):
    """`make`, also keeping the session it made."""
    return lambda header: kept.append(make(header)) or kept[-1]


@pytest.mark.parametrize("case", ["repeat", "short", "long", "invalid", "second-key", "not-rows"])
def test_tampered_reply_is_refused_and_charged(case):
    def tamper(direction, m):
        if direction == "answerer" and isinstance(m, cs.Rows):
            e = m.elements
            if case == "not-rows":
                return cs.Open(e[:32], 0)
            return cs.Rows({"repeat": e[:-32] + e[:32], "short": e[:-32], "long": e + card._pads(400),
                            "invalid": e[:-32] + b"\xff" * 32,
                            "second-key": card.multiply_batch(group.random_scalar(), e)}[case])
        return m

    asker, kept = fund(max_batch=1000), []
    with pytest.raises(card.InvalidMessage):
        Link(asker, keeping(agency_for(), kept), TYPES, tamper)
    (agency,) = kept
    assert agency.evaluated == asker.total_elements and not agency.finished  # Y' had left


@pytest.mark.parametrize("case", ["too-many-rows", "invalid-key", "repeated-row", "no-rows"])
def test_fund_centre_refuses_a_tampered_answer(case):
    def tamper(direction, m):
        if direction != "asker":
            return m
        if isinstance(m, cs.Key):
            return cs.Key(b"\xff" * 32 if case == "invalid-key" else m.key,
                          0 if case == "no-rows" else m.rows)
        if isinstance(m, cs.Rows) and len(m.elements) == 32 * 50 and case == "too-many-rows":
            return cs.Rows(m.elements + card._pads(200))
        if isinstance(m, cs.Rows) and case == "repeated-row":
            return cs.Rows(m.elements[:-32] + m.elements[:32])
        return m

    with pytest.raises(card.InvalidMessage):
        link(tamper=tamper)


# -- a mismatch fails on both sides -------------------------------------------------------------

def test_reply_under_another_key_than_announced_fails_on_both_sides():
    """A fund centre whose P does not match the key of its reply: the agency finds no
    canary and refuses; the fund centre's count never comes."""
    def tamper(direction, m):
        if direction == "answerer" and isinstance(m, cs.Open):
            return cs.Open(group.base_mul(group.random_scalar()), m.padding)
        return m

    asker, kept = fund(), []
    with pytest.raises(card.InvalidMessage, match="not computed with the announced key"):
        Link(asker, keeping(agency_for(), kept), TYPES, tamper)
    with pytest.raises(ProtocolStateError):
        kept[0].result()
    with pytest.raises(ProtocolStateError, match="ended early"):
        asker.result()
