"""The threshold sessions (protocols/threshold_session.py): two parties in one process,
every message through the real protobuf envelopes, against the plain comparison; rounds
out of order, tampered and mismatched messages refused on the side that receives them.

One 3072-bit Paillier key per run (tests/protocols/conftest.py: generating it is the slow part).
"""
from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import phe
import pytest

from protocols import labels, oprf
from protocols import threshold as th
from protocols.session import ProtocolStateError
from protocols.session import (
    ElementBatch, Evaluated, InvalidRound, Piece, StreamEnded, ThresholdSummary,
)
from protocols.threshold_session import ThresholdAnswerer, ThresholdAsker, check_applicants
from protocols.threshold_table import (
    PublishedTable, check_header, income_label_context, income_label_length, table_digest,
)

from .stats_wire import THRESHOLD, run

TAG = 16
ROWS = 60


@pytest.fixture(scope="module")
def rows():
    rng = random.Random(3)
    ids = [b"3204%014d" % i for i in range(ROWS)]
    return ids, [rng.randrange(2_000, 30_000) for _ in ids]


def _publish(paillier_keys, rows, key: oprf.OprfSecretKey, mode: int, *, owner="hrss",
             partner="fund", dataset="flexible_workers") -> PublishedTable:
    """The agency's per-epoch table, as protocols/threshold_table.py describes it."""
    pk, sk = paillier_keys
    ids, incomes = rows
    outputs = oprf.evaluate(key, ids, mode)
    packed, w = th.prepare_incomes(sk, incomes), 2 * ((pk.n.bit_length() + 7) // 8)
    context = income_label_context(owner=owner, partner=partner, dataset=dataset, epoch=2,
                                   key_id=th.key_id(pk.n))
    sealed = labels.seal_blobs(outputs, [packed[i * w:(i + 1) * w] for i in range(len(ids))],
                               context)
    tags = b"".join(o[:TAG] for o in outputs)
    return PublishedTable.from_rows(pk.n, th.key_id(pk.n), 2, TAG, income_label_length(pk.n),
                                    tags, b"".join(sealed))


@pytest.fixture(scope="module", params=[oprf.MODE_OPRF, oprf.MODE_VOPRF])
def agency(request, paillier_keys, rows):
    key = oprf.OprfSecretKey.generate()
    return key, request.param, _publish(paillier_keys, rows, key, request.param)


def _applicants(rows):
    ids, incomes = rows
    rng = random.Random(5)
    picked = rng.sample(range(ROWS), 30)
    applicants = [(ids[i], incomes[i] + (0, 1, -1, 5_000, -5_000)[k % 5])
                  for k, i in enumerate(picked)]
    applicants += [(b"9999%014d" % k, 1_000) for k in range(8)] + [applicants[0]]
    return applicants


def _sessions(paillier_keys, agency, applicants, *, table=None, answer_key=None, elements=None,
              max_batch=7, dataset="flexible_workers"):
    key, mode, published = agency
    _, sk = paillier_keys
    ids, thresholds = zip(*applicants)
    asker = ThresholdAsker(ids, thresholds, table or published, owner="hrss", asker="fund",
                           dataset=dataset, oprf_mode=mode, public_key=key.public_key(),
                           chunk_bytes=4096, rng=random.Random(9))
    answer_key = answer_key or key
    answerer = ThresholdAnswerer(
        sk, elements=len(ids) if elements is None else elements, rows=ROWS, unusable_rows=2,
        evaluate=lambda packed: oprf.blind_evaluate(answer_key, packed),
        prove=(lambda b, e: oprf.prove(answer_key, b, e)) if mode == oprf.MODE_VOPRF else None,
        max_batch=max_batch, chunk_bytes=4096)
    return asker, answerer


def test_answers_equal_the_plain_comparison(paillier_keys, rows, agency) -> None:
    applicants = _applicants(rows)
    asker, answerer = _sessions(paillier_keys, agency, applicants)
    seen = run(asker, answerer, THRESHOLD)
    assert asker.finished and answerer.finished and asker.outgoing_done
    income = dict(zip(*rows))
    expected = [income[x] >= t if x in income else None for x, t in applicants]
    assert asker.result().answers == expected and asker.result().matched == 31
    assert (asker.result().rows, asker.result().unusable_rows) == (ROWS, 2)
    assert answerer.elements_answered == len(applicants) == 39
    assert [m.seq for m in seen["request"] if isinstance(m, ElementBatch)] == list(range(6))
    assert answerer.result() == ThresholdSummary(39)


def test_no_applicant_registered_still_sends_one_comparison_per_applicant(
        paillier_keys, rows, agency) -> None:
    applicants = [(b"8888%014d" % k, 100) for k in range(5)]
    asker, answerer = _sessions(paillier_keys, agency, applicants)
    seen = run(asker, answerer, THRESHOLD)
    assert asker.result().answers == [None] * 5
    comparison = b"".join(m.data for m in seen["request"] if isinstance(m, Piece))
    width = 2 * ((paillier_keys[0].n.bit_length() + 7) // 8)
    assert len(th.ThresholdRequest.from_bytes(comparison).ciphertexts) == 5 * width


def test_applicants_are_checked_before_anything_is_sent() -> None:
    with pytest.raises(ValueError, match="one threshold per identifier"):
        check_applicants([b"a", b"b"], [1])
    with pytest.raises(ValueError, match="below 2\\^62"):
        check_applicants([b"a"], [2**62])


# -- rounds out of order ------------------------------------------------------------------


def _first_batch(paillier_keys, agency, applicants, **kw):
    asker, answerer = _sessions(paillier_keys, agency, applicants, **kw)
    asker.start()
    batches = asker.handle(answerer.start()[0])
    return asker, answerer, batches


def test_rounds_out_of_order_or_after_the_end_are_refused(paillier_keys, rows, agency) -> None:
    applicants = _applicants(rows)[:5]
    asker, answerer = _sessions(paillier_keys, agency, applicants)
    answerer.start()
    with pytest.raises(ProtocolStateError, match="expected batch 0"):
        answerer.handle(Piece("comparison", b"x", True))
    asker.start()
    with pytest.raises(ProtocolStateError, match="malformed answer: expected accepted"):
        asker.handle(Evaluated(0, b""))
    asker, answerer, (batch,) = _first_batch(paillier_keys, agency, applicants)
    answerer.handle(batch)
    with pytest.raises(ProtocolStateError, match="expected comparison chunks, got batch"):
        answerer.handle(batch)
    with pytest.raises(ProtocolStateError, match="malformed answer: expected evaluated, got summary"):
        asker.handle(ThresholdSummary(5))
    asker, answerer = _sessions(paillier_keys, agency, applicants)
    run(asker, answerer, THRESHOLD)
    with pytest.raises(ProtocolStateError, match="after the end of the session"):
        answerer.handle(batch)
    with pytest.raises(ProtocolStateError, match="malformed answer: expected nothing more"):
        asker.handle(ThresholdSummary(5))


def test_a_stream_that_stops_early_is_refused(paillier_keys, rows, agency) -> None:
    _, answerer, _ = _first_batch(paillier_keys, agency, _applicants(rows), max_batch=50)
    with pytest.raises(StreamEnded, match="before every element was sent"):
        answerer.end_of_stream()
    _, answerer, (batch,) = _first_batch(paillier_keys, agency, _applicants(rows), max_batch=50)
    answerer.handle(batch)
    with pytest.raises(InvalidRound, match="ended before the comparison round"):
        answerer.end_of_stream()
    with pytest.raises(ProtocolStateError, match="after the session failed"):
        answerer.handle(batch)


# -- tampered messages ----------------------------------------------------------------------


@pytest.mark.parametrize("batch, reason", [
    (ElementBatch(0, b"\xff" * 32 * 5), "batch 0 holds an invalid group element"),
    (ElementBatch(1, oprf.blind([b"x"])[1]), "expected batch 0: a whole number of 1..7"),
    (ElementBatch(0, b"\0" * 33), "expected batch 0: a whole number of 1..7"),
    (ElementBatch(0, oprf.blind([b"x%d" % i for i in range(6)])[1]), "within the announced total"),
])
def test_invalid_or_misshapen_batches_are_refused(paillier_keys, rows, agency, batch,
                                                  reason) -> None:
    _, answerer = _sessions(paillier_keys, agency, _applicants(rows)[:5])
    answerer.start()
    with pytest.raises(InvalidRound, match=reason):
        answerer.handle(batch)
    assert answerer.elements_answered == 0


def _tamper(kind, change):
    def tamper(direction, message):
        return change(message) if isinstance(message, kind) else message
    return tamper


def test_tampered_evaluations_are_refused(paillier_keys, rows, agency) -> None:
    _, mode, _ = agency
    swapped = _tamper(Evaluated, lambda m: replace(m, seq=m.seq + 1))
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows))
    with pytest.raises(InvalidRound, match="evaluated batch 0 is out of order"):
        run(asker, answerer, THRESHOLD, tamper=swapped)
    if mode == oprf.MODE_VOPRF:  # a proven evaluation: another element fails the proof
        other = oprf.blind([b"other"] * 7)[1]
        wrong = _tamper(Evaluated, lambda m: replace(m, elements=other[:len(m.elements)]))
        asker, answerer = _sessions(paillier_keys, agency, _applicants(rows))
        with pytest.raises(InvalidRound, match="do not verify against the published key"):
            run(asker, answerer, THRESHOLD, tamper=wrong)


def test_a_tampered_comparison_or_signs_are_refused(paillier_keys, rows, agency) -> None:
    first = []

    def zero_entry(direction, message):  # entry 0 of the comparison becomes 0
        if isinstance(message, Piece) and message.round == "comparison" and not first:
            first.append(message)
            return replace(message, data=message.data[:17] + b"\0" * (len(message.data) - 17))
        return message
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows), max_batch=64)
    with pytest.raises(InvalidRound, match="comparison refused: invalid Paillier ciphertext "
                                           "\\(entry 0\\)"):
        run(asker, answerer, THRESHOLD, tamper=zero_entry)
    short = _tamper(Piece, lambda m: replace(m, data=m.data[:-1]) if m.round == "signs" else m)
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows))
    with pytest.raises(InvalidRound, match="sent an answer that is refused"):
        run(asker, answerer, THRESHOLD, tamper=short)


def test_another_number_of_comparisons_is_refused(paillier_keys, rows, agency) -> None:
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows))
    with pytest.raises(InvalidRound, match="another number of comparisons"):
        run(asker, answerer, THRESHOLD,
            tamper=_tamper(ThresholdSummary, lambda m: ThresholdSummary(m.entries - 1)))


# -- mismatches -----------------------------------------------------------------------------


def test_a_table_under_another_paillier_key_is_refused_by_the_agency(
        paillier_keys, rows, agency) -> None:
    key, mode, _ = agency
    other = phe.generate_paillier_keypair(n_length=3072)
    stale = _publish(other, rows, key, mode)
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows), table=stale)
    with pytest.raises(InvalidRound, match="comparison refused: request is for another public key"):
        run(asker, answerer, THRESHOLD)
    assert not asker.finished


def test_a_table_sealed_for_another_dataset_is_refused_by_the_fund_centre(
        paillier_keys, rows, agency) -> None:
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows), dataset="workers_dp")
    with pytest.raises(InvalidRound, match="sealed income that does not open"):
        run(asker, answerer, THRESHOLD)
    assert not answerer.finished


def test_a_query_of_another_size_than_announced_is_refused_by_the_agency(
        paillier_keys, rows, agency) -> None:
    asker, answerer = _sessions(paillier_keys, agency, _applicants(rows), elements=38)
    with pytest.raises(InvalidRound, match="within the announced total"):
        run(asker, answerer, THRESHOLD)


def test_the_published_table_checks_its_header(paillier_keys, rows, agency) -> None:
    pk, _ = paillier_keys
    _, _, table = agency
    digest = table_digest(table.key_id, table.tags.tobytes(), b"")
    check_header(pk.n, th.key_id(pk.n), rows=ROWS, tag_length=TAG,
                 label_length=income_label_length(pk.n), digest=digest)
    with pytest.raises(ValueError, match="malformed threshold table header"):
        check_header(pk.n, b"\0" * 16, rows=ROWS, tag_length=TAG,
                     label_length=income_label_length(pk.n), digest=digest)
    with pytest.raises(th.InvalidPublicKey):
        check_header(pk.n + 1, th.key_id(pk.n), rows=ROWS, tag_length=TAG,
                     label_length=income_label_length(pk.n), digest=digest)
    assert np.all(table.tags[:-1] <= table.tags[1:])
