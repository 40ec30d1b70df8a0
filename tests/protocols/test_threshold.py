"""Private threshold checks with Paillier, two parties in one process, messages as bytes.

One 3072-bit key per module (key generation is the slow part). Statistical checks use
bounds whose failure probability is below 2^-40.
"""

from __future__ import annotations

import math
import pickle
import random
from concurrent.futures import ProcessPoolExecutor

import gmpy2
import phe
import pytest

from protocols import threshold as th
from protocols.threshold import (
    AgencyThreshold, BatchRefused, FundCentreThreshold, InvalidCiphertext, InvalidPublicKey,
    ThresholdRequest, ThresholdResponse,
)


@pytest.fixture(scope="module")
def keys(paillier_keys):
    return paillier_keys


@pytest.fixture(scope="module")
def incomes():
    rng = random.Random(11)
    return [rng.randrange(1_000_000_00) for _ in range(120)] + [0, 1, 2**62]


@pytest.fixture(scope="module")
def published(keys, incomes):
    """The agency's per-epoch preparation: Enc(income) per row, packed."""
    _, sk = keys
    return th.prepare_incomes(sk, incomes, chunk=50)


def _run(keys, applicants, **kw):
    pk, sk = keys
    fc = FundCentreThreshold(pk.n, applicants, **kw)
    request = ThresholdRequest.from_bytes(fc.request().to_bytes())
    response = ThresholdResponse.from_bytes(AgencyThreshold(sk).respond(request).to_bytes())
    return fc.decide(response), request


def test_prepared_ciphertexts_are_plain_paillier(keys, incomes, published) -> None:
    pk, sk = keys
    cs = th.unpack_ciphertexts(published, pk.n)
    assert [sk.decrypt(phe.EncryptedNumber(pk, c)) for c in cs] == incomes
    assert len(set(cs)) == len(cs)
    plain = th.FixedBaseRandomizer(pk.n)  # without the factors: mod n^2 tables
    for m in (0, 5, -7, pk.max_int):
        assert sk.decrypt(phe.EncryptedNumber(pk, plain.encrypt(m))) == m


def test_threshold_answers_equal_the_plain_comparison(keys, incomes, published) -> None:
    pk, _ = keys
    cs = th.unpack_ciphertexts(published, pk.n)
    deltas = [0, 1, -1, 10**6, -10**6, 2**40, -(2**40)]
    applicants = [(cs[i], incomes[i] + deltas[i % len(deltas)]) for i in range(90)]
    applicants += [(cs[-3], 0), (cs[-3], 1), (cs[-1], 2**62), (cs[-1], 2**62 + 1)]
    answers, request = _run(keys, applicants, rng=random.Random(3))
    assert answers == [incomes[cs.index(c)] >= t for c, t in applicants]
    assert len(request.ciphertexts) == 128 * th._width(pk.n)  # padded with dummies


def test_agency_learns_a_fair_coin_and_a_blurred_magnitude(keys, incomes, published) -> None:
    pk, sk = keys
    cs = th.unpack_ciphertexts(published, pk.n)
    applicants = [(c, 0) for c in cs[:128]]  # every answer is "yes"
    fc = FundCentreThreshold(pk.n, applicants)
    request = fc.request()
    # Test-only: what the agency sees when it decrypts.
    w = [sk.decrypt(phe.EncryptedNumber(pk, c))
         for c in th.unpack_ciphertexts(request.ciphertexts, pk.n)]
    positive = sum(x > 0 for x in w)
    assert 20 <= positive <= 108  # Binomial(128, 1/2): 7.8 sd either way
    bits = [abs(x).bit_length() for x in w]
    assert min(bits) > th.REFUSE_BELOW_BITS and max(bits) <= th.MAX_W_BITS
    assert len(set(bits)) > 100  # spread over ~1024 octaves, not clustered
    assert all(fc.decide(AgencyThreshold(sk).respond(request)))


def test_blinds_are_log_uniform_within_and_across_octaves() -> None:
    rng = random.Random(99)
    logs = [math.log2(th._log_uniform_blind(rng)) for _ in range(4000)]
    lo, hi = th.BLIND_MIN_BITS, th.BLIND_MIN_BITS + th.BLIND_OCTAVES
    assert all(lo <= x < hi for x in logs)
    quarters = [sum(lo + k * 256 <= x < lo + (k + 1) * 256 for x in logs) for k in range(4)]
    assert all(850 < q < 1150 for q in quarters)  # 1000 expected, sd 27
    # A uniform mantissa would put 41% below sqrt(2); log-uniform puts 50% there.
    below = sum((x % 1) < 0.5 for x in logs) / len(logs)
    assert 0.45 < below < 0.55  # sd 0.008


def test_signs_from_the_process_pool(keys, incomes, published) -> None:
    pk, sk = keys
    cs = th.unpack_ciphertexts(published, pk.n)
    applicants = [(cs[i], 50_000_000) for i in range(60)]
    with ProcessPoolExecutor(2) as pool:
        fc = FundCentreThreshold(pk.n, applicants, mapper=pool.map, chunk=16)
        response = AgencyThreshold(sk, mapper=pool.map, chunk=16).respond(fc.request())
        packed = th.prepare_incomes(sk, incomes[:10], mapper=pool.map, chunk=4)
    assert fc.decide(response) == [incomes[i] >= 50_000_000 for i in range(60)]
    assert [sk.decrypt(phe.EncryptedNumber(pk, c))
            for c in th.unpack_ciphertexts(packed, pk.n)] == incomes[:10]


def test_short_keys_and_non_rsa_moduli_are_refused(keys) -> None:
    small, _ = phe.generate_paillier_keypair(n_length=2048)
    p = int(gmpy2.next_prime(1 << 1540))
    for n in (small.n, 1 << 3072, p * p, 3 * int(gmpy2.next_prime(1 << 3072))):
        with pytest.raises(InvalidPublicKey):
            th.validate_public_key(n)
    with pytest.raises(InvalidPublicKey):
        FundCentreThreshold(small.n, [(small.encrypt(1).ciphertext(), 0)])
    assert th.validate_public_key(keys[0].n).n == keys[0].n


def test_invalid_ciphertexts_are_refused_on_both_sides(keys, published) -> None:
    pk, sk = keys
    good = th.unpack_ciphertexts(published, pk.n)[0]
    for bad in (0, pk.nsquare, sk.p * 12345, pk.nsquare + good):
        with pytest.raises(InvalidCiphertext):
            FundCentreThreshold(pk.n, [(good, 0), (bad, 0)])
    for bad in (0, pk.nsquare, sk.p * 12345):  # each fits the fixed-width encoding
        request = ThresholdRequest(th.key_id(pk.n), th.pack_ciphertexts([good, bad], pk.n))
        with pytest.raises(InvalidCiphertext) as err:
            AgencyThreshold(sk).respond(request)
        assert err.value.index == 1 and str(sk.p) not in str(err.value)
    with pytest.raises(InvalidCiphertext) as err:
        th.unpack_ciphertexts(th.pack_ciphertexts([good, sk.q], pk.n), pk.n)
    assert err.value.index == 1


def test_agency_decrypts_only_blinded_protocol_values(keys, published) -> None:
    pk, sk = keys
    agency = AgencyThreshold(sk, max_batch=256)
    cs = th.unpack_ciphertexts(published, pk.n)
    with pytest.raises(BatchRefused, match="not a blinded"):  # an income sent unblinded
        agency.respond(ThresholdRequest(th.key_id(pk.n), th.pack_ciphertexts(cs[:3], pk.n)))
    huge = pk.raw_encrypt(pk.n // 3)  # a plaintext far above the blinded window
    with pytest.raises(BatchRefused):
        agency.respond(ThresholdRequest(th.key_id(pk.n), th.pack_ciphertexts([huge], pk.n)))
    with pytest.raises(BatchRefused, match="another public key"):
        agency.respond(ThresholdRequest(b"\x00" * 16, th.pack_ciphertexts(cs[:1], pk.n)))
    with pytest.raises(BatchRefused, match="batch size"):
        agency.respond(ThresholdRequest(th.key_id(pk.n), th.pack_ciphertexts(cs * 3, pk.n)))
    with pytest.raises(BatchRefused, match="batch size"):
        agency.respond(ThresholdRequest(th.key_id(pk.n), b""))
    with pytest.raises(BatchRefused, match="batch size"):
        agency.respond(ThresholdRequest(th.key_id(pk.n), th.pack_ciphertexts(cs[:1], pk.n)[1:]))


def test_mismatched_or_tampered_responses_are_refused(keys, published) -> None:
    pk, sk = keys
    cs = th.unpack_ciphertexts(published, pk.n)
    fc = FundCentreThreshold(pk.n, [(cs[0], 0)])
    request = fc.request()
    with pytest.raises(th.ProtocolStateError):
        fc.request()
    response = AgencyThreshold(sk).respond(request)
    with pytest.raises(BatchRefused):
        fc.decide(ThresholdResponse(response.count - 1, response.bits))
    other = FundCentreThreshold(pk.n, [(cs[1], 0)])
    other.request()
    with pytest.raises(BatchRefused):
        other.decide(ThresholdResponse(response.count, response.bits[:-1]))
    with pytest.raises(th.ProtocolStateError):
        other.decide(response)
    with pytest.raises(BatchRefused):
        ThresholdResponse.from_bytes(b"\x02\x00")
    with pytest.raises(BatchRefused):
        ThresholdRequest.from_bytes(b"\x01short")


def test_batch_size_and_threshold_range_are_checked(keys, published) -> None:
    pk, _ = keys
    c = th.unpack_ciphertexts(published, pk.n)[0]
    with pytest.raises(ValueError):
        FundCentreThreshold(pk.n, [(c, 0)] * 5, batch_size=4)
    with pytest.raises(ValueError):
        FundCentreThreshold(pk.n, [(c, 2**63)])
    with pytest.raises(ValueError):
        FundCentreThreshold(pk.n, [])


def test_private_state_is_not_printable_or_picklable(keys) -> None:
    agency = AgencyThreshold(keys[1])
    assert "hidden" in repr(agency) and str(keys[1].p) not in repr(agency)
    with pytest.raises(TypeError):
        pickle.dumps(agency)
