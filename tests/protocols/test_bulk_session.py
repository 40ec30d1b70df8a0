"""The bulk PSI sessions, two parties in one process, every message crossing as bytes.

Covers: the result equals the plain intersection (fixed cases and hypothesis);
what each side learns; mismatched parameters on both sides; tampered, truncated,
reordered and wrong-round messages; state and secret hygiene; streaming bounds.
"""
from __future__ import annotations

import pickle
import random
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from protocols import group
from protocols.bulk import (
    BulkReceiver, BulkSender, InvalidMessage, ProtocolStateError, cuckoo, derive, messages,
)

from .bulk_helpers import SeededBytes, run, wire


def ids(prefix: str, numbers) -> list[bytes]:
    return [f"shuqiao/id/v1/custom/{prefix}{n}".encode() for n in numbers]


def hello_of(receiver: BulkReceiver) -> bytes:
    return list(receiver.start())[0]


def intersection(x: list[bytes], receiver: BulkReceiver) -> set[bytes]:
    return {x[i] for i in receiver.result().tolist()}


def pair(x, y, seed=b"s", **kw):
    r = BulkReceiver(x, random_bytes=SeededBytes(b"fc" + seed), **kw.get("r", {}))
    s = BulkSender(y, random_bytes=SeededBytes(b"ag" + seed), **kw.get("s", {}))
    return r, s


@pytest.mark.parametrize("n1, n2, common", [(1, 1, 1), (1, 1, 0), (3, 500, 2), (700, 40, 40),
                                            (2000, 3000, 1234), (300, 300, 0)])
def test_result_is_exactly_the_intersection(n1: int, n2: int, common: int) -> None:
    x = ids("p", range(n1))
    y = ids("p", range(n1 - common, n1 - common + n2))
    r, s = pair(x, y, r={"chunk_rows": 256}, s={"chunk_elements": 97})
    run(r, s)
    assert r.finished and s.finished
    assert intersection(x, r) == set(x) & set(y) and len(set(x) & set(y)) == common


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sets(st.binary(max_size=40).filter(lambda b: not b.endswith(b"\0")), min_size=1,
               max_size=60),
       st.sets(st.binary(max_size=40).filter(lambda b: not b.endswith(b"\0")), min_size=1,
               max_size=60),
       st.integers(0, 2**32))
def test_property_equals_plain_set_intersection(xs, ys, seed) -> None:
    x, y = sorted(xs), sorted(ys | set(sorted(xs)[: len(xs) // 2]))
    r, s = pair(x, y, seed=seed.to_bytes(8, "little"), s={"chunk_elements": 7})
    run(r, s)
    assert intersection(x, r) == set(x) & set(y)


def test_what_each_side_learns_sizes_and_bins_only() -> None:
    x1, x2 = ids("a", range(500)), ids("b", range(500))    # same size, disjoint contents
    y = ids("a", range(250, 1250))
    views = []
    for x in (x1, x2):
        r, s = pair(x, y, seed=b"same")
        transcript = run(r, s)
        assert s.receiver_size == 500 and r.sender_size == 1000
        assert s.oprf_evaluations == r.oprf_evaluations == derive(500, 1000).bins
        views.append([m for d, m in transcript if d == "fc->agency"])
    # The agency's view: same sizes whatever X holds; Hello identical under the same
    # randomness; corrections differ but are balanced bits.
    assert [len(m) for m in views[0]] == [len(m) for m in views[1]]
    assert views[0][0] == views[1][0]
    assert [m[1] for m in views[0][:2]] == [messages.HELLO, messages.HASHING_KEY]
    corrections = np.frombuffer(b"".join(m[6:] for m in views[0][2:]), np.uint8)
    assert abs(np.unpackbits(corrections).mean() - 0.5) < 0.01
    rows = sum(len(m) - 6 for m in views[0][2:]) // 64
    assert rows == derive(500, 1000).bins                    # one OPRF evaluation per bin


def test_a_malicious_fund_centre_reads_bits_of_the_agencys_secret_off_known_members() -> None:
    """The limit of the semi-honest model (SECURITY.md, "bulk"). Flipping bit b of the
    correction in the bin of an element the fund centre knows the agency holds keeps
    the match iff s_b = 0: a bit of s per known member. With all of s (and the u, t it
    holds) it could compute any element's values and test guessed identifiers offline
    against every value the agency sent. Fails once corrections are checked."""
    y = ids("k", range(300))
    x = y[:64] + ids("z", range(100))
    r, s = pair(x, y, r={"chunk_rows": 128})
    hello = list(r.start())
    owner = r._table.owner.copy()                          # bin -> element, its own table
    probes = {k: 7 * k + 3 for k in range(64)}             # known member -> bit of s probed

    def flip(m: bytes) -> bytes:
        if m[1] != messages.CORRECTION:
            return m
        index = struct.unpack_from("<I", m, 2)[0]
        rows = np.frombuffer(m[6:], np.uint8).copy().reshape(-1, 64)
        for j, k in enumerate(owner[index * 128:(index + 1) * 128].tolist()):
            if k in probes:
                rows[j, probes[k] // 8] ^= 1 << (probes[k] % 8)
        return m[:6] + rows.tobytes()
    setup = list(s.handle(wire(hello[0])))
    values = [v for c in list(r.handle(wire(setup[0]))) for v in s.handle(wire(flip(c)))]
    for v in values:
        list(r.handle(wire(v)))
    secret = np.unpackbits(s._ext._s.view(np.uint8), bitorder="little")
    found = set(r.result().tolist())
    assert {k for k in probes if k in found} == {k for k, b in probes.items() if secret[b] == 0}
    assert 0 < len(found) < 64                             # both outcomes occurred


def test_agency_rows_arrive_in_a_fresh_random_order() -> None:
    y = ids("row", range(400))          # the matches are the dataset's first ten rows
    x = y[:10] + ids("other", range(90))
    r, s = pair(x, y, s={"chunk_elements": 40})
    found_per_chunk = []
    setup = list(s.handle(wire(hello_of(r))))[0]
    values = [v for c in list(r.handle(wire(setup))) for v in s.handle(wire(c))]
    for v in values:
        before = sum(a.size for a in r._matches)
        list(r.handle(wire(v)))
        found_per_chunk.append(sum(a.size for a in r._matches) - before)
    assert sum(found_per_chunk) == 10 and len(found_per_chunk) == 10
    assert max(found_per_chunk) < 10                         # not all in the first chunk


def test_same_randomness_same_transcript_other_randomness_other_transcript() -> None:
    x, y = ids("k", range(60)), ids("k", range(30, 90))
    t1 = run(*pair(x, y, seed=b"one"))
    t2 = run(*pair(x, y, seed=b"one"))
    t3 = run(*pair(x, y, seed=b"two"))
    assert t1 == t2 and [m for _, m in t1] != [m for _, m in t3]


def test_streaming_chunks_respect_their_bounds() -> None:
    x, y = ids("c", range(3000)), ids("c", range(1000, 9000))
    r, s = pair(x, y, r={"chunk_rows": 512}, s={"chunk_elements": 1000})
    transcript = run(r, s)
    value_bytes = derive(3000, 8000).value_bytes
    corrections = [m for m in transcript if m[1][1] == messages.CORRECTION]
    values = [m for m in transcript if m[1][1] == messages.VALUES]
    assert all(len(m) <= 6 + 512 * 64 for _, m in corrections)
    assert len(values) == 8 and all(len(m) == 6 + 1000 * 3 * value_bytes for _, m in values)


# --- mismatches, on both sides -----------------------------------------------------


def _first_messages(x, y):
    r, s = pair(x, y)
    hello = hello_of(r)
    setup = list(s.handle(wire(hello)))[0]
    return r, s, hello, setup


def test_version_mismatch_fails_on_both_sides() -> None:
    x, y = ids("v", range(10)), ids("v", range(10))
    r, s, hello, setup = _first_messages(x, y)
    with pytest.raises(InvalidMessage):
        BulkSender(y).handle(b"\x02" + hello[1:])
    with pytest.raises(InvalidMessage):
        r.handle(b"\x02" + setup[1:])


def test_bin_count_must_follow_the_declared_size() -> None:
    x, y = ids("q", range(100)), ids("q", range(100))
    hello = messages.Hello.from_bytes(hello_of(BulkReceiver(x)))
    for bins in (hello.bins + 128, hello.bins - 128):     # more evaluations than declared
        forged = messages.Hello(hello.receiver_size, bins, hello.chunk_rows,
                                hello.base_ot_point).to_bytes()
        with pytest.raises(InvalidMessage):
            BulkSender(y).handle(forged)


def test_size_limits_refuse_on_both_sides() -> None:
    x, y = ids("l", range(50)), ids("l", range(80))
    with pytest.raises(InvalidMessage):
        BulkSender(y, max_receiver_elements=49).handle(hello_of(BulkReceiver(x)))
    r = BulkReceiver(x, max_sender_elements=79)
    setup = list(BulkSender(y).handle(hello_of(r)))[0]
    with pytest.raises(InvalidMessage):
        r.handle(setup)


def test_a_hello_must_declare_the_size_announced_beforehand() -> None:
    x, y = ids("a", range(300)), ids("a", range(100))
    hello = hello_of(BulkReceiver(x))
    for announced in (299, 301):
        with pytest.raises(InvalidMessage):
            BulkSender(y, receiver_size=announced).handle(hello)
    setup = list(BulkSender(y, receiver_size=300).handle(hello))
    assert len(setup) == 1 and setup[0][1] == messages.SETUP


@pytest.mark.parametrize("rows", [100, 0, 1 << 19])
def test_sender_refuses_unaligned_or_huge_chunks(rows: int) -> None:
    hello = messages.Hello.from_bytes(hello_of(BulkReceiver(ids("z", range(5)))))
    forged = messages.Hello(hello.receiver_size, hello.bins, rows, hello.base_ot_point).to_bytes()
    with pytest.raises(InvalidMessage):
        BulkSender(ids("z", range(5))).handle(forged)


# --- tampered messages -------------------------------------------------------------


@pytest.mark.parametrize("edit", [lambda m: m[:-1], lambda m: m + b"\0", lambda m: m[:1], lambda m: b""])
def test_truncated_or_extended_first_messages_are_invalid(edit) -> None:
    x, y = ids("t", range(20)), ids("t", range(20))
    r, s, hello, setup = _first_messages(x, y)
    with pytest.raises(InvalidMessage):
        BulkSender(y).handle(edit(hello))
    with pytest.raises(InvalidMessage):
        r.handle(edit(setup))


def test_setup_with_an_invalid_base_ot_point_is_invalid() -> None:
    x, y = ids("b", range(20)), ids("b", range(20))
    r, _, _, setup = _first_messages(x, y)
    head = len(setup) - 512 * 32
    bad = setup[:head + 32 * 7] + group.IDENTITY + setup[head + 32 * 8:]
    with pytest.raises(InvalidMessage):
        r.handle(bad)


def test_hello_with_an_invalid_base_ot_point_is_invalid() -> None:
    hello = hello_of(BulkReceiver(ids("h", range(5))))
    with pytest.raises(InvalidMessage):
        BulkSender(ids("h", range(5))).handle(hello[:-32] + bytes(31) + b"\x80")


def test_reordered_or_replayed_chunks_are_invalid() -> None:
    x, y = ids("o", range(600)), ids("o", range(300, 900))
    r, s = pair(x, y, r={"chunk_rows": 256}, s={"chunk_elements": 100})
    hello = hello_of(r)
    setup = list(s.handle(wire(hello)))[0]
    key, *chunks = list(r.handle(wire(setup)))
    assert len(chunks) >= 2
    list(s.handle(key))
    with pytest.raises(InvalidMessage):
        s.handle(chunks[1])                                  # chunk 1 before chunk 0
    r2, s2 = pair(x, y, r={"chunk_rows": 256}, s={"chunk_elements": 100})
    setup2 = list(s2.handle(wire(hello_of(r2))))[0]
    key2, *chunks2 = list(r2.handle(wire(setup2)))
    list(s2.handle(key2))
    list(s2.handle(chunks2[0]))
    with pytest.raises(InvalidMessage):
        s2.handle(chunks2[0])                                # replayed chunk 0


def test_values_out_of_order_or_of_the_wrong_length_are_invalid() -> None:
    x, y = ids("w", range(50)), ids("w", range(25, 200))
    for edit in (lambda m: m[:2] + struct.pack("<I", 5) + m[6:], lambda m: m[:-1]):
        r, s = pair(x, y, s={"chunk_elements": 40})
        hello = hello_of(r)
        setup = list(s.handle(wire(hello)))[0]
        values = [v for c in r.handle(setup) for v in s.handle(c)]
        with pytest.raises(InvalidMessage):
            r.handle(edit(values[0]))


def test_flipped_correction_bits_lose_matches_but_never_invent_them() -> None:
    # Semi-honest protocol: no integrity on u (mTLS carries that); a corrupted row
    # changes that bin's q_j by (flip & s), so its element goes unfound.
    x, y = ids("f", range(400)), ids("f", range(200, 600))

    def tap(direction: str, m: bytes) -> bytes:
        if m[1] == messages.CORRECTION and m[2:6] == bytes(4):
            body = np.frombuffer(m[6:], np.uint8).copy().reshape(-1, 64)
            body ^= 0xFF
            return m[:6] + body.tobytes()
        return m
    r, s = pair(x, y, r={"chunk_rows": 128})
    run(r, s, tap)
    found = intersection(x, r)
    assert found < set(x) & set(y) and len(found) > 100


# --- round order and state ---------------------------------------------------------


def test_wrong_round_messages_raise_a_state_error() -> None:
    x, y = ids("r", range(30)), ids("r", range(30))
    r, s, hello, setup = _first_messages(x, y)
    with pytest.raises(ProtocolStateError):
        BulkSender(y).handle(setup)                       # agency gets its own kind
    with pytest.raises(ProtocolStateError):
        BulkReceiver(x).handle(setup)                      # before start()
    r2, s2, hello2, setup2 = _first_messages(x, y)
    key, *corrections = list(r2.handle(setup2))
    with pytest.raises(ProtocolStateError):
        s2.handle(hello2)                                  # a second Hello
    with pytest.raises(ProtocolStateError):
        r2.handle(setup2)                                  # a second Setup
    with pytest.raises(ProtocolStateError):
        BulkSender(y).handle(corrections[0])               # a correction before Hello
    with pytest.raises(ProtocolStateError):
        BulkSender(y).handle(key)                          # the key before Hello
    with pytest.raises(ProtocolStateError):
        s2.handle(corrections[0])                          # a correction before the key


def test_messages_after_the_end_and_calls_on_a_dead_session() -> None:
    x, y = ids("e", range(30)), ids("e", range(30))
    r, s = pair(x, y)
    transcript = run(r, s)
    with pytest.raises(ProtocolStateError):
        r.handle(transcript[-1][1])
    with pytest.raises(ProtocolStateError):
        s.handle(transcript[0][1])
    with pytest.raises(ProtocolStateError):
        r.start()
    dead = BulkSender(y)
    with pytest.raises(InvalidMessage):
        dead.handle(b"\x01\x01garbage")
    with pytest.raises(ProtocolStateError):
        dead.handle(transcript[0][1])                      # even a good Hello now


def test_the_previous_rounds_messages_must_be_taken_first() -> None:
    x, y = ids("p", range(300)), ids("p", range(300))
    r, s = pair(x, y, r={"chunk_rows": 128})
    start = r.start()
    hello = next(start)                                    # table not built yet
    setup = next(iter(s.handle(hello)))                    # stream not drained
    with pytest.raises(ProtocolStateError):
        s.handle(hello)
    with pytest.raises(ProtocolStateError):
        r.handle(setup)
    list(start)
    r.handle(setup)                                        # never iterated
    with pytest.raises(ProtocolStateError):
        r.handle(setup)


def test_result_needs_a_finished_run() -> None:
    r = BulkReceiver(ids("n", range(3)))
    with pytest.raises(ProtocolStateError):
        r.result()


# --- inputs and hygiene ------------------------------------------------------------


def test_inputs_must_be_distinct_non_empty_and_nul_free() -> None:
    with pytest.raises(ValueError):
        BulkReceiver([])
    with pytest.raises(ValueError):
        BulkSender([b"ok", b"bad\0"])
    with pytest.raises(ValueError):
        list(BulkReceiver([b"twice", b"once", b"twice"]).start())
    r = BulkReceiver([b"a", b"b"])
    s = BulkSender([b"twice", b"twice"])
    with pytest.raises(ValueError):                        # found once it hashes its rows
        run(r, s)


def test_numpy_bytes_arrays_are_accepted_as_they_are() -> None:
    x = np.array(ids("np", range(100)), dtype="S40")
    y = np.array(ids("np", range(50, 150)), dtype="S64")
    r, s = pair(x, y)
    run(r, s)
    assert r.result().tolist() == list(range(50, 100))


def test_a_failed_cuckoo_insertion_rehashes_under_a_fresh_key(monkeypatch) -> None:
    real, calls = cuckoo.insert, []

    def flaky(candidates, bins, max_rounds=None):
        calls.append(1)
        return None if len(calls) == 1 else real(candidates, bins)
    monkeypatch.setattr(cuckoo, "insert", flaky)
    x, y = ids("c", range(200)), ids("c", range(100, 300))
    r, s = pair(x, y)
    transcript = run(r, s)
    key = messages.HashingKey.from_bytes(transcript[2][1]).key
    draws = SeededBytes(b"fc" + b"s")
    draws(64)                                              # the base-OT scalar comes first
    first, second = draws(16), draws(16)
    assert key == second != first
    assert len(calls) == 2 and intersection(x, r) == set(x) & set(y)


def test_sessions_hide_their_secrets() -> None:
    r, s = pair(ids("h", range(5)), ids("h", range(5)))
    for session in (r, s):
        assert "hidden" in repr(session)
        with pytest.raises(TypeError):
            pickle.dumps(session)


def test_receiver_and_sender_agree_on_the_quota_before_any_work() -> None:
    x = ids("quota", range(12345))
    r = BulkReceiver(x)
    assert r.oprf_evaluations == derive(12345, 1).bins
    s = BulkSender(ids("quota", range(10)))
    assert s.oprf_evaluations is None
    list(s.handle(hello_of(r)))
    assert s.oprf_evaluations == r.oprf_evaluations and s.receiver_size == 12345


def test_random_sets_many_seeds() -> None:
    rng = random.Random(5)
    for trial in range(5):
        x = ids("m", rng.sample(range(5000), rng.randint(1, 400)))
        y = ids("m", rng.sample(range(5000), rng.randint(1, 400)))
        r, s = pair(x, y, seed=bytes([trial]))
        run(r, s)
        assert intersection(x, r) == set(x) & set(y)
