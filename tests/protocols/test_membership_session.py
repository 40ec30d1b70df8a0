"""Membership sessions, two parties in one process with every message over a byte wire.

The house checklist: a full run (OPRF, sampled and full VOPRF) equal to the plain
intersection, RFC 9497 vectors through the sessions, wrong-round and after-the-end
messages refused with ProtocolStateError, tampered messages refused on each side, a
mismatch that fails on both sides, and what the answerer sees.
"""
from __future__ import annotations

import random
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import pytest

from protocols import group, oprf
from protocols import membership as ms
from protocols.session import ProtocolStateError
from protocols.oprf import OprfSecretKey

from .vectors import load_json
from .wire import Link as WireLink

TYPES = (ms.Header, ms.Accepted, ms.ElementBatch, ms.ProofRequest, ms.BatchProof, ms.Finish,
         ms.Summary)
ROWS = [b"row-%d" % i for i in range(300)]
ASKED = ROWS[:40] + [b"absent-%d" % i for i in range(35)]
TAG = 16


class Link(WireLink):
    def __init__(self, asker, make_answerer, tamper=None) -> None:
        super().__init__(asker, make_answerer, TYPES, tamper)


def answerer_for(key, mode=oprf.MODE_OPRF, max_batch=20):
    return lambda header: ms.MembershipAnswerer(header, ms.KeyEvaluator(key), max_batch=max_batch,
                                                verifiable=mode == oprf.MODE_VOPRF)


def asker(key, mode=oprf.MODE_OPRF, inputs=ASKED, **kw):
    kw = {"width": TAG, "max_batch": 32, "public_key": key.public_key(), "rng": random.Random(5),
          **kw}
    return ms.MembershipAsker(inputs, mode=mode, **kw)


def matched(outputs: bytes, key, mode=oprf.MODE_OPRF, width=TAG) -> list[bool]:
    table = {o[:width] for o in oprf.evaluate(key, ROWS, mode)}
    return [outputs[i:i + width] in table for i in range(0, len(outputs), width)]


# -- full runs ------------------------------------------------------------------------------

@pytest.mark.parametrize("mode, sample", [(oprf.MODE_OPRF, None), (oprf.MODE_VOPRF, 4),
                                          (oprf.MODE_VOPRF, None)])
def test_two_party_run_equals_the_plain_intersection(mode, sample):
    key = OprfSecretKey.generate()
    link = Link(asker(key, mode, proof_sample=sample), answerer_for(key, mode)).run()
    assert matched(link.asker.result(), key, mode) == [True] * 40 + [False] * 35
    assert link.answerer.finished and link.answerer.result() == 75 == link.answerer.evaluated
    assert link.asker.finished and link.asker.summary == ms.Summary(75)
    batches = link.received("answerer", ms.ElementBatch)
    assert [len(b.elements) // 32 for b in batches] == [20, 20, 20, 15]  # the answerer's max
    requests = link.received("answerer", ms.ProofRequest)
    if mode == oprf.MODE_OPRF:
        assert requests == []
    else:
        assert [len(r.indices) for r in requests] == [sample or 20] * 3 + [min(sample or 15, 15)]
        assert all(list(r.indices) == sorted(set(r.indices)) for r in requests)


def test_labeled_width_keeps_the_whole_output_and_progress_is_reported():
    key, seen = OprfSecretKey.generate(), []
    link = Link(asker(key, width=oprf.OUTPUT_LEN, progress=lambda d, t: seen.append((d, t))),
                answerer_for(key)).run()
    assert link.asker.result() == b"".join(oprf.evaluate(key, ASKED))
    assert seen == [(20, 75), (40, 75), (60, 75), (75, 75)]


@pytest.mark.parametrize("pool", ["threads", "processes"])
def test_batch_work_through_an_executor_gives_the_same_outputs(pool):
    key = OprfSecretKey.generate()
    make = ThreadPoolExecutor(2) if pool == "threads" else ProcessPoolExecutor(2)
    with make as executor:
        link = Link(asker(key, oprf.MODE_VOPRF, submit=executor.submit, in_flight=3, proof_sample=3),
                    answerer_for(key, oprf.MODE_VOPRF)).run()
        outputs = link.asker.result()
    assert outputs == b"".join(o[:TAG] for o in oprf.evaluate(key, ASKED, oprf.MODE_VOPRF))


def _vector_cases():
    for suite in load_json("oprf/rfc9497_all_suites.json"):
        if suite["identifier"] == "ristretto255-SHA512" and suite["mode"] in (0, 1):
            for number, vector in enumerate(suite["vectors"], 1):
                yield pytest.param(suite, vector, id=f"mode{suite['mode']}:v{number}")


@pytest.mark.parametrize("suite, vector", list(_vector_cases()))
def test_rfc9497_vectors_through_the_sessions(suite, vector):
    """Source: ../shared/vectors/oprf/rfc9497_all_suites.json (RFC 9497 Appendix A)."""
    hexes = lambda field: [bytes.fromhex(x) for x in vector[field].split(",")]
    mode = suite["mode"]
    key = OprfSecretKey.derive(bytes.fromhex(suite["seed"]), bytes.fromhex(suite["keyInfo"]), mode)
    link = Link(asker(key, mode, inputs=hexes("Input"), blinds=hexes("Blind"),
                      width=oprf.OUTPUT_LEN), answerer_for(key, mode)).run()
    (sent,) = link.received("answerer", ms.ElementBatch)
    (answered,) = link.received("asker", ms.ElementBatch)
    assert sent.elements == b"".join(hexes("BlindedElement"))
    assert answered.elements == b"".join(hexes("EvaluationElement"))
    assert link.asker.result() == b"".join(hexes("Output"))


# -- round order ------------------------------------------------------------------------------

def started_answerer(mode=oprf.MODE_OPRF, total=3, key=None):
    answerer = answerer_for(key or OprfSecretKey.generate(), mode)(ms.Header(total))
    answerer.start()
    return answerer


def batch(seq: int, n: int) -> ms.ElementBatch:
    return ms.ElementBatch(seq, oprf.blind([b"x-%d-%d" % (seq, i) for i in range(n)])[1])


@pytest.mark.parametrize("case", ["before-start", "start-twice", "header", "accepted", "proof-oprf",
                                  "after-finish", "after-a-refusal"])
def test_answerer_refuses_messages_out_of_round(case):
    answerer = answerer_for(OprfSecretKey.generate())(ms.Header(3))
    if case == "before-start":
        with pytest.raises(ProtocolStateError):
            answerer.handle(batch(0, 3))
        return
    answerer.start()
    if case == "start-twice":
        with pytest.raises(ProtocolStateError):
            answerer.start()
        return
    message = {"header": ms.Header(3), "accepted": ms.Accepted(3), "proof-oprf": ms.ProofRequest(0, (0,))}
    if case in message:
        answerer.handle(batch(0, 3))
        with pytest.raises(ProtocolStateError):
            answerer.handle(message[case])
        return
    if case == "after-finish":
        answerer.handle(batch(0, 3))
        assert answerer.handle(ms.Finish()) == [ms.Summary(3)]
    else:
        with pytest.raises(ms.InvalidMessage):
            answerer.handle(batch(1, 3))
    with pytest.raises(ProtocolStateError):
        answerer.handle(batch(0, 3) if case == "after-a-refusal" else ms.Finish())
    with pytest.raises(ProtocolStateError):
        answerer.result() if case == "after-a-refusal" else answerer.handle(batch(1, 1))


def test_answerer_result_waits_for_finish():
    answerer = started_answerer()
    answerer.handle(batch(0, 3))
    assert answerer.evaluated == 3
    with pytest.raises(ProtocolStateError):
        answerer.result()


def accepted_asker(key, mode=oprf.MODE_OPRF, n=5):
    a = asker(key, mode, inputs=ROWS[:n], max_batch=2)
    a.start()
    a.handle(ms.Accepted(2))
    return a


def test_asker_refuses_messages_out_of_round():
    key = OprfSecretKey.generate()
    fresh = asker(key)
    with pytest.raises(ProtocolStateError):
        fresh.handle(ms.Accepted(3))                 # before start
    fresh.start()
    with pytest.raises(ProtocolStateError):
        fresh.batches()                              # before Accepted
    with pytest.raises(ProtocolStateError):
        fresh.handle(batch(0, 3))                    # an answer before Accepted
    a = accepted_asker(key)
    with pytest.raises(ProtocolStateError):
        a.handle(ms.Accepted(2))                     # Accepted twice
    a = accepted_asker(key)
    with pytest.raises(ProtocolStateError):
        a.handle(ms.BatchProof(0, b"\x00" * 64))     # a proof in OPRF mode
    a = accepted_asker(key)
    sent = list(a.batches())
    with pytest.raises(ProtocolStateError):
        a.batches()                                  # batches are sent once
    with pytest.raises(ProtocolStateError):
        a.handle(ms.ElementBatch(1, sent[1].elements))  # answered out of order
    with pytest.raises(ProtocolStateError):
        a.result()                                   # the answer ended early


def test_asker_refuses_an_answer_to_a_batch_not_sent_yet():
    a = accepted_asker(OprfSecretKey.generate())
    next(iter(a.batches()))  # only batch 0 has left
    a.handle(ms.ElementBatch(0, batch(0, 2).elements))
    with pytest.raises(ProtocolStateError):
        a.handle(ms.ElementBatch(1, batch(1, 2).elements))


def test_asker_takes_one_summary_after_the_end_and_nothing_else():
    key = OprfSecretKey.generate()
    link = Link(asker(key), answerer_for(key)).run()
    outputs = link.asker.result()
    assert link.asker.summary == ms.Summary(75) and len(outputs) == 75 * TAG
    with pytest.raises(ProtocolStateError):
        link.asker.handle(ms.Summary(75))
    with pytest.raises(ProtocolStateError):
        link.asker.handle(ms.ElementBatch(0, b""))


def test_asker_refuses_a_summary_before_every_batch_is_answered():
    a = accepted_asker(OprfSecretKey.generate())
    with pytest.raises(ms.InvalidMessage, match="summary does not match"):
        a.handle(ms.Summary(5))


# -- tampered messages ----------------------------------------------------------------------

IDENTITY, NON_CANONICAL = b"\x00" * 32, b"\xff" * 32


@pytest.mark.parametrize("case, expect", [
    ("bad-seq", "expected seq 0"), ("ragged", "is malformed"), ("over-total", "is malformed"),
    ("too-big", "is malformed"), ("empty", "is malformed"),
    ("repeat-within", "repeats a blinded element"), ("repeat-across", "repeats a blinded element"),
    ("identity", "invalid group element"), ("non-canonical", "invalid group element"),
    ("short-finish", "finish after 2 of 5")])
def test_answerer_refuses_tampered_batches(case, expect):
    answerer = answerer_for(OprfSecretKey.generate(), max_batch=4)(ms.Header(5))
    answerer.start()
    good = batch(0, 2)
    if case in ("repeat-across", "short-finish"):
        answerer.handle(good)
    message = {
        "bad-seq": ms.ElementBatch(1, good.elements), "ragged": ms.ElementBatch(0, good.elements[:-1]),
        "over-total": batch(0, 6), "too-big": batch(0, 5), "empty": ms.ElementBatch(0, b""),
        "repeat-within": ms.ElementBatch(0, good.elements[:32] * 2),
        "repeat-across": ms.ElementBatch(1, good.elements[32:] + batch(1, 1).elements),
        "identity": ms.ElementBatch(0, good.elements[:32] + IDENTITY),
        "non-canonical": ms.ElementBatch(0, good.elements[:32] + NON_CANONICAL),
        "short-finish": ms.Finish()}[case]
    evaluated = answerer.evaluated
    with pytest.raises(ms.InvalidMessage, match=expect):
        answerer.handle(message)
    assert answerer.evaluated == evaluated  # the refused batch was not evaluated


@pytest.mark.parametrize("indices, seq", [((3, 1), 0), ((), 0), ((0, 0), 0), ((4,), 0), ((-1, 0), 0),
                                          ((0,), 1), ("twice", 0)])
def test_answerer_refuses_malformed_proof_requests(indices, seq):
    answerer = started_answerer(oprf.MODE_VOPRF, total=4)
    answerer.handle(batch(0, 4))
    if indices == "twice":
        answerer.handle(ms.ProofRequest(0, (0, 1)))
        indices = (2,)
    with pytest.raises(ms.InvalidMessage, match="proof request for batch"):
        answerer.handle(ms.ProofRequest(seq, indices))


def flip(element: bytes, key) -> bytes:
    """A valid element other than the one sent: evaluated under another key."""
    return oprf.blind_evaluate(key, element)


@pytest.mark.parametrize("case", ["wrong-size", "invalid-evaluation", "rogue-evaluation",
                                  "tampered-proof", "proof-of-other-batch", "wrong-summary"])
def test_asker_refuses_tampered_answers(case):
    key, rogue = OprfSecretKey.generate(), OprfSecretKey.generate()
    mode = oprf.MODE_OPRF if case == "invalid-evaluation" else oprf.MODE_VOPRF
    proofs = []

    def tamper(direction, m):
        if direction != "asker":
            return m
        if isinstance(m, ms.ElementBatch) and m.seq == 1:
            if case == "wrong-size":
                return ms.ElementBatch(1, m.elements[:-32])
            if case == "invalid-evaluation":
                return ms.ElementBatch(1, m.elements[:-32] + NON_CANONICAL)
            if case == "rogue-evaluation":
                return ms.ElementBatch(1, m.elements[:-32] + flip(m.elements[-32:], rogue))
        if isinstance(m, ms.BatchProof):
            proofs.append(m)
            if case == "tampered-proof" and m.seq == 2:
                return ms.BatchProof(2, bytes([m.proof[0] ^ 1]) + m.proof[1:])
            if case == "proof-of-other-batch" and m.seq == 2:
                return ms.BatchProof(2, proofs[0].proof)
        if isinstance(m, ms.Summary) and case == "wrong-summary":
            return ms.Summary(m.elements_evaluated - 1)
        return m

    link = Link(asker(key, mode), answerer_for(key, mode), tamper=tamper)
    with pytest.raises(ms.InvalidMessage):
        link.run()
        link.asker.result()  # the proofs and evaluations are checked by the batch work


# -- a mismatch fails on both sides -------------------------------------------------------------

def test_another_key_than_the_pinned_one_fails_the_asker_and_matches_nothing():
    key, rogue = OprfSecretKey.generate(), OprfSecretKey.generate()
    link = Link(asker(key, oprf.MODE_VOPRF), answerer_for(rogue, oprf.MODE_VOPRF)).run()
    with pytest.raises(ms.InvalidMessage, match="does not verify against its published key"):
        link.asker.result()
    plain = Link(asker(key), answerer_for(rogue)).run()  # OPRF: no proof, but no match either
    assert not any(matched(plain.asker.result(), key))


def test_mode_mismatch_fails_on_both_sides():
    """An asker that wants proofs from an OPRF answerer: the answerer refuses the proof
    request, and the asker's answer ended early."""
    key = OprfSecretKey.generate()
    link = Link(asker(key, oprf.MODE_VOPRF), answerer_for(key, oprf.MODE_OPRF))
    with pytest.raises(ProtocolStateError):
        link.run()
    assert not link.answerer.finished and not link.asker.finished
    with pytest.raises(ProtocolStateError, match="ended early"):
        link.asker.result()
    with pytest.raises(ProtocolStateError):
        link.answerer.result()


def test_announced_total_mismatch_fails_on_both_sides():
    key = OprfSecretKey.generate()
    link = Link(asker(key), lambda h: answerer_for(key)(ms.Header(h.total_elements - 10)))
    with pytest.raises(ms.InvalidMessage, match="within the announced total"):
        link.run()
    with pytest.raises(ProtocolStateError):
        link.asker.result()


# -- what the answerer learns ---------------------------------------------------------------------

def test_answerer_sees_only_fresh_random_elements_and_their_number():
    key = OprfSecretKey.generate()
    runs = [Link(asker(key), answerer_for(key)).run() for _ in range(2)]
    seen = [b"".join(b.elements for b in r.received("answerer", ms.ElementBatch)) for r in runs]
    first, second = (set(group.split_elements(s)) for s in seen)
    assert len(first) == len(second) == 75 and not first & second  # unlinkable across queries
    assert all(map(group.is_valid_element, first))
    hashed = {oprf.blind([x], [b"\x01" + b"\x00" * 31])[1] for x in ASKED}  # H(x) itself
    assert not first & hashed
    assert runs[0].answerer.result() == 75  # all it keeps: the count
