"""Shuffled DH matching, two parties in one process, every message crossing a byte wire.

Covers: the selection equals the plain intersection; what each side sees (random
elements, shuffled orders); tampered and mismatched messages on both sides; state and
secret hygiene; the packed batch functions through a real process pool.
"""

from __future__ import annotations

import pickle
import random
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest

from protocols import group, psi_shuffle as ps
from protocols.psi_shuffle import (
    AgencyShuffler, FundCentreMatcher, InvalidMessage, ProtocolStateError, ShuffleRequest,
    ShuffleResponse,
)

AGENCY_ROWS = [b"3204021999%08d" % i for i in range(3000)]
P_ENCODED = (2**255 - 19).to_bytes(32, "little")  # the field prime: non-canonical


@pytest.fixture(scope="module")
def hashed_rows() -> bytes:
    return ps.hash_identifiers(AGENCY_ROWS)


def _run(fc_ids, hashed_rows, rng=None):
    fc = FundCentreMatcher(fc_ids, rng=rng)
    agency = AgencyShuffler(hashed_rows, rng=rng)
    request = ShuffleRequest.from_bytes(fc.request().to_bytes())
    response = ShuffleResponse.from_bytes(agency.respond(request).to_bytes())
    return fc.select(response), agency, request, response


def _spearman(order: np.ndarray) -> float:
    return float(np.corrcoef(np.arange(len(order)), order)[0, 1])


def test_selection_is_exactly_the_intersection(hashed_rows: bytes) -> None:
    rng = random.Random(7)
    members = rng.sample(range(len(AGENCY_ROWS)), 300)
    fc_ids = [AGENCY_ROWS[i] for i in members] + [b"not-registered-%d" % i for i in range(200)]
    selection, agency, _, _ = _run(fc_ids, hashed_rows)
    assert len(selection) == len(AGENCY_ROWS) and selection.count == 300
    # Test oracle joining both private states: selected positions are the members' rows.
    assert set(agency.permutation[selection.bits].tolist()) == set(members)


def test_empty_intersection_selects_nothing(hashed_rows: bytes) -> None:
    selection, *_ = _run([b"nobody-%d" % i for i in range(50)], hashed_rows)
    assert selection.count == 0


def test_agency_sees_fresh_valid_random_elements(hashed_rows: bytes) -> None:
    ids = AGENCY_ROWS[:100]
    _, _, first, _ = _run(ids, hashed_rows)
    _, _, second, _ = _run(ids, hashed_rows)
    a, b = group.split_elements(first.blinded), group.split_elements(second.blinded)
    assert all(map(group.is_valid_element, a))
    assert not set(a) & set(b), "the same identifiers must look unrelated across queries"
    assert not set(a) & set(group.split_elements(hashed_rows)), "H(x) must never be sent"


def test_fund_centre_pseudonyms_are_fresh_per_query(hashed_rows: bytes) -> None:
    _, _, _, r1 = _run(AGENCY_ROWS[:10], hashed_rows)
    _, _, _, r2 = _run(AGENCY_ROWS[:10], hashed_rows)
    assert not set(group.split_elements(r1.rows)) & set(group.split_elements(r2.rows))


def test_agency_returns_the_set_shuffled_and_rows_in_random_order(hashed_rows: bytes) -> None:
    # The test plays a fund centre with a known scalar and a known order, so it can
    # see where each of its elements comes back.
    ids = AGENCY_ROWS[:1000]
    a = group.random_scalar()
    request = ShuffleRequest(ps.multiply_batch(a, ps.hash_batch(ids), validate=False))
    agency = AgencyShuffler(hashed_rows)
    response = agency.respond(request)
    unblinded = group.split_elements(
        ps.multiply_batch(group.scalar_invert(a), response.double_blinded))
    row_position = {y: j for j, y in enumerate(group.split_elements(response.rows))}
    came_back_as = np.array([agency.permutation[row_position[u]] for u in unblinded])
    assert sorted(came_back_as.tolist()) == list(range(1000))
    assert abs(_spearman(came_back_as)) < 0.25  # sd ~0.03 for a uniform shuffle
    assert abs(_spearman(agency.permutation)) < 0.1  # sd ~0.02 over 3000 rows


def test_random_permutation_is_a_permutation_and_seedable() -> None:
    p = ps.random_permutation(5000, random.Random(1))
    assert sorted(p.tolist()) == list(range(5000))
    assert np.array_equal(p, ps.random_permutation(5000, random.Random(1)))
    assert not np.array_equal(ps.random_permutation(5000), ps.random_permutation(5000))


@pytest.mark.parametrize("bad", [group.IDENTITY, P_ENCODED, b"\xff" * 32])
def test_agency_refuses_invalid_elements(hashed_rows: bytes, bad: bytes) -> None:
    good = ps.multiply_batch(group.random_scalar(), ps.hash_batch(AGENCY_ROWS[:5]), False)
    request = ShuffleRequest(good[:64] + bad + good[64:])
    with pytest.raises(InvalidMessage) as err:
        AgencyShuffler(hashed_rows).respond(request)
    assert err.value.index == 2 and "3204" not in str(err.value)


def test_agency_enforces_size_bounds(hashed_rows: bytes) -> None:
    request = FundCentreMatcher(AGENCY_ROWS[:5]).request()
    with pytest.raises(InvalidMessage):
        AgencyShuffler(hashed_rows).respond(request, min_elements=10)
    with pytest.raises(InvalidMessage):
        AgencyShuffler(hashed_rows).respond(request, max_elements=4)


@pytest.mark.parametrize("frame", [b"", b"\x02" + bytes(8), b"\x01" + (31).to_bytes(8, "big")
                                   + bytes(31), b"\x01" + (32).to_bytes(8, "big") + bytes(33)])
def test_malformed_frames_are_refused(frame: bytes) -> None:
    with pytest.raises(InvalidMessage):
        ShuffleRequest.from_bytes(frame)


def test_fund_centre_refuses_tampered_responses(hashed_rows: bytes) -> None:
    def fresh():
        fc = FundCentreMatcher(AGENCY_ROWS[:20])
        return fc, AgencyShuffler(hashed_rows).respond(fc.request())

    fc, good = fresh()
    with pytest.raises(InvalidMessage):  # one element short
        fc.select(ShuffleResponse(good.double_blinded[32:], good.rows))
    fc, good = fresh()
    with pytest.raises(InvalidMessage):  # an invalid double-blinded element
        fc.select(ShuffleResponse(P_ENCODED + good.double_blinded[32:], good.rows))
    fc, good = fresh()
    with pytest.raises(InvalidMessage):  # a repeated element
        fc.select(ShuffleResponse(good.double_blinded[:32] * 20, good.rows))
    fc, good = fresh()
    with pytest.raises(InvalidMessage):  # a duplicated row would count twice
        fc.select(ShuffleResponse(good.double_blinded, good.rows + good.rows[:32]))
    fc, good = fresh()
    with pytest.raises(InvalidMessage):  # the identity among the rows
        fc.select(ShuffleResponse(good.double_blinded, group.IDENTITY + good.rows))


def test_mismatched_response_matches_nothing(hashed_rows: bytes) -> None:
    # A response computed for another fund centre's request unblinds to garbage.
    ids = AGENCY_ROWS[:50]
    fc, other = FundCentreMatcher(ids), FundCentreMatcher(ids)
    fc.request()
    response = AgencyShuffler(hashed_rows).respond(other.request())
    assert fc.select(response).count == 0


def test_steps_out_of_order_are_refused(hashed_rows: bytes) -> None:
    fc, agency = FundCentreMatcher(AGENCY_ROWS[:3]), AgencyShuffler(hashed_rows)
    with pytest.raises(ProtocolStateError):
        fc.select(ShuffleResponse(b"", b""))
    request = fc.request()
    with pytest.raises(ProtocolStateError):
        fc.request()
    response = agency.respond(request)
    with pytest.raises(ProtocolStateError):
        agency.respond(request)
    fc.select(response)
    with pytest.raises(ProtocolStateError):
        fc.select(response)


def test_secret_state_is_not_printable_or_picklable(hashed_rows: bytes) -> None:
    for state in (FundCentreMatcher([b"x"]), AgencyShuffler(hashed_rows)):
        assert "hidden" in repr(state)
        with pytest.raises(TypeError):
            pickle.dumps(state)


def test_process_pool_gives_the_same_selection(hashed_rows: bytes) -> None:
    ids = AGENCY_ROWS[::7] + [b"outsider"]
    with ProcessPoolExecutor(2) as pool:
        fc = FundCentreMatcher(ids, mapper=pool.map, chunk=128)
        agency = AgencyShuffler(hashed_rows, mapper=pool.map, chunk=512)
        assert ps.hash_identifiers(AGENCY_ROWS, pool.map, 256) == hashed_rows
        agency.prepare()
        selection = fc.select(agency.respond(fc.request()))
    assert set(agency.permutation[selection.bits].tolist()) == set(range(0, 3000, 7))


def test_scalar_multiplication_counts() -> None:
    assert ps.scalar_mult_counts(100_000, 1_000_000) == {
        "fund_centre": {"hash_to_group": 100_000, "scalar_mul": 200_000},
        "agency": {"hash_to_group_cacheable": 1_000_000, "scalar_mul": 1_100_000}}
