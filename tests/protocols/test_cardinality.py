"""Private cardinality with dummy-match noise: exact with no fakes, c + d - shift with fakes."""
from __future__ import annotations

import random

import numpy as np
import pytest

from protocols import cardinality as card


def sets(m, n, overlap, seed=1):
    rng = random.Random(seed)
    pool = [b"id-%d" % i for i in rng.sample(range(10 * (m + n)), m + n - overlap)]
    return pool[:m], pool[m - overlap:]


@pytest.mark.parametrize("fakes, padding", [(0, 0), (0, 10), (7, 10), (10, 10)])
def test_count_is_intersection_plus_fakes_minus_shift(fakes, padding):
    x, y = sets(300, 500, 120)
    fund = card.FundCentreCount(x)
    p, a = fund.request()
    agency = card.AgencyCount(padding, fakes)
    b, yy = agency.respond(p, a, card.hash_batch(y))
    assert len(b) == 32 * (300 + padding) and len(yy) == 32 * (500 + padding)
    assert fund.count(b, yy, padding, shift=padding // 2) == 120 + fakes - padding // 2


def test_the_agency_sees_only_random_elements_and_the_fund_centre_only_shuffled_lists():
    x, y = sets(50, 80, 30, seed=2)
    f1, f2 = card.FundCentreCount(x), card.FundCentreCount(x)
    p1, a1 = f1.request()
    p2, a2 = f2.request()
    # fresh keys: the same people look unrelated across two queries
    assert not set(np.frombuffer(a1, "S32")) & set(np.frombuffer(a2, "S32")) and p1 != p2
    agency = card.AgencyCount(0, 0)
    b, _ = agency.respond(p1, a1, card.hash_batch(y))
    # B comes back in an order unrelated to A's
    blinded_in_order = card.multiply_batch(agency._b, a1)
    assert b != blinded_in_order and sorted(np.frombuffer(b, "S32")) == sorted(np.frombuffer(blinded_in_order, "S32"))


def test_malformed_messages_are_refused():
    x, y = sets(10, 10, 5)
    fund = card.FundCentreCount(x)
    p, a = fund.request()
    agency = card.AgencyCount(2, 1)
    with pytest.raises(card.InvalidMessage):
        agency.respond(b"\x00" * 32, a, card.hash_batch(y))
    with pytest.raises(card.InvalidMessage):
        agency.respond(p, a + b"\xff" * 32, card.hash_batch(y))
    b, yy = agency.respond(p, a, card.hash_batch(y))
    with pytest.raises(card.InvalidMessage):
        fund.count(b[:-32], yy, 2, 1)
    with pytest.raises(card.InvalidMessage):
        fund.count(b, yy + yy[:32], 2, 1)   # a repeated row element
