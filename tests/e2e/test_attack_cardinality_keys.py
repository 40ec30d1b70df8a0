"""An overreaching fund centre on the cardinality kind, over the raw wire.

The old protocol returned b*A to the fund centre: blinding one member under a second
key a' (or sending H(x) unblinded) and unblinding b*A with a'^-1 counted that member
exactly, past the DP noise and the duplicate refusal. Now the agency counts: the fund
centre receives only Q = b*G, Y' (the agency's rows and canaries) and the noised
release, and a tampered A or Y'' is refused (a Y'' after Y' left is charged).
"""
from __future__ import annotations

import random

import grpc
import pytest

from protocols import cardinality as card
from protocols import group

from . import adversary as adv
from . import fixtures as fx

pytestmark = pytest.mark.e2e

EXACT = {"kinds": ["cardinality"]}
GRANTS = {"second-key": EXACT, "unblinded": EXACT, "noised": {**EXACT, "dp_epsilon": 1.0, "dp_budget": 10.0},
          "bad-a": EXACT, "bad-reply": EXACT}


@pytest.fixture(scope="module")
def agency(tmp_path_factory):
    s = adv.federation(tmp_path_factory.mktemp("cardinality-keys"), GRANTS)
    yield s
    s.fed.close()


def absent_person() -> str:
    return fx.people(random.Random(4242), 1)[0]


def bodies(responses) -> list[str]:
    return [r.WhichOneof("body") for r in responses]


def ask(agency, partner, req, **kw):
    return adv.cardinality(agency, partner, adv.cardinality_messages(adv.dataset_info(agency, partner), req, **kw))


def view(agency, got):
    """(Q, Y', summary) after checking the response holds nothing else: no b*A at all."""
    assert set(bodies(got)) == {"accepted", "key", "rows", "summary"}
    (key,) = [r.key for r in got if r.WhichOneof("body") == "key"]
    rows = b"".join(r.rows for r in got if r.WhichOneof("body") == "rows")
    n = len(agency.registry)
    assert key.rows == len(rows) // 32 == n + card.canaries(n)   # the agency's rows and canaries only
    (summary,) = [r.summary for r in got if r.WhichOneof("body") == "summary"]
    return key.key, rows, summary


def second_key_count(agency, partner, target: str):
    nine = [adv.element(agency, p) for p in agency.registry[:9]]
    other = group.random_scalar()
    under_other = card.multiply_batch(other, card.hash_batch([adv.element(agency, target)]))
    got, err = ask(agency, partner, adv.CountRequest(nine, extra=under_other), size=10)
    assert err is None, err
    q, rows, summary = view(agency, got)
    # The old attack's step: a'^-1 over everything received, matched against the rows.
    unblinded = set(group.split_elements(card.multiply_batch(group.scalar_invert(other), rows + q)))
    assert not unblinded & set(group.split_elements(rows))
    return summary


def test_member_blinded_under_a_second_key_is_not_counted(agency):
    member = second_key_count(agency, "second-key", agency.registry[9])
    absent = second_key_count(agency, "second-key", absent_person())
    assert member.count == absent.count == 9 and member.epsilon_micro == 0   # exact grant: 9 either way


def test_member_sent_unblinded_is_not_counted(agency):
    nine = [adv.element(agency, p) for p in agency.registry[:9]]
    counts = []
    for target in (agency.registry[9], absent_person()):
        raw = card.hash_batch([adv.element(agency, target)])
        got, err = ask(agency, "unblinded", adv.CountRequest(nine, extra=raw), size=10)
        assert err is None, err
        counts.append(view(agency, got)[2].count)
    assert counts == [9, 9]


def test_second_key_under_dp_gets_only_the_noised_release(agency):
    summary = second_key_count(agency, "noised", agency.registry[9])
    assert summary.epsilon_micro == 1_000_000 and summary.noise_bound > 0
    assert abs(summary.count - 9) <= summary.noise_bound
    (row,) = [r for r in adv.answerer_log(agency, "noised") if r["outcome"] == "answered"][-1:]
    assert row["epsilon_micro"] == 1_000_000


@pytest.mark.parametrize("tamper", ["repeat", "invalid", "more", "fewer", "padding-at-row-count"])
def test_tampered_request_is_refused_before_any_answer(agency, tamper):
    ten = [adv.element(agency, p) for p in agency.registry[:10]]
    size, padding = 10, 1
    req = adv.CountRequest(ten, padding=1)
    if tamper == "repeat":
        req.elements = req.elements[:-32] + req.elements[:32]
    elif tamper == "invalid":
        req.elements = req.elements[:-32] + adv.INVALID_ELEMENT
    elif tamper == "more":
        req.elements += card._pads(1)
    elif tamper == "fewer":
        req.elements = req.elements[:-32]
    else:
        padding = req.padding = len(agency.registry)
        req.elements += card._pads(padding - 1)
    before = len(adv.answerer_log(agency, "bad-a"))
    got, err = ask(agency, "bad-a", req, size=size)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bodies(got) == ["accepted"]              # neither Q nor Y' left the agency
    (row,) = adv.answerer_log(agency, "bad-a")[before:]
    assert row["outcome"] == "refused"


@pytest.mark.parametrize("tamper", ["repeat", "short", "invalid", "second-key"])
def test_tampered_reply_is_refused_and_charged(agency, tamper):
    ten = [adv.element(agency, p) for p in agency.registry[:10]]
    req = adv.CountRequest(ten)

    def reply(q, y):
        honest = req.reply(q, y)
        return {"repeat": honest[:-32] + honest[:32], "short": honest[:-32],
                "invalid": honest[:-32] + adv.INVALID_ELEMENT,
                "second-key": card.shuffle(card.multiply_batch(group.random_scalar(), y))}[tamper]

    before = len(adv.answerer_log(agency, "bad-reply"))
    got, err = ask(agency, "bad-reply", req, reply=reply)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "summary" not in bodies(got) and "rows" in bodies(got)
    (row,) = adv.answerer_log(agency, "bad-reply")[before:]
    assert row["outcome"] == "broken_by_asker" and row["elements"] == 10


def test_padding_filled_with_real_people_is_charged_for_everyone_counted(agency):
    """The padding's places are counted over like asked elements: a fund centre that
    fills them with real people gets them counted, so it is charged for them too."""
    fifteen = [adv.element(agency, p) for p in agency.registry[20:35]]
    req = adv.CountRequest(fifteen[:10], padding=5)
    req.elements = card.multiply_batch(req.a, card.hash_batch(fifteen))  # padding = 5 more people
    before = len(adv.answerer_log(agency, "bad-a"))
    got, err = ask(agency, "bad-a", req)
    assert err is None, err
    assert view(agency, got)[2].count == 15                  # all fifteen were counted...
    (row,) = adv.answerer_log(agency, "bad-a")[before:]
    assert row["outcome"] == "answered" and row["elements"] == 15   # ...and all are charged


def test_padding_cannot_stand_in_for_the_floor(agency):
    five = [adv.element(agency, p) for p in agency.registry[40:45]]
    req = adv.CountRequest(five, padding=5)             # 10 in the header, 5 of them padding
    before = len(adv.answerer_log(agency, "bad-a"))
    got, err = ask(agency, "bad-a", req)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "besides its padding" in err.details()
    assert bodies(got) == ["accepted"]
    (row,) = adv.answerer_log(agency, "bad-a")[before:]
    assert row["outcome"] == "refused"
