"""A partner holding streams open must not starve the node (issue 9, item 5).

A raw gRPC client with the fund centre's certificate opens query streams and then sends
nothing, or only a header, or trickles messages forever. Health checks and dataset
listings must still answer at once, idle streams are cancelled after the idle timeout,
calls past the node's deadline are cancelled whatever deadline the caller set, and a
stream over the per-partner cap is refused with RESOURCE_EXHAUSTED.
"""
from __future__ import annotations

import threading
import time
import tomllib

import grpc
import pytest
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

from . import fixtures as fx
from .fixtures import blinded, channel_as, header

pytestmark = pytest.mark.e2e

IDLE = 2.0
DEADLINE = 6.0
CAP = 4
THREADS, RESERVED = 16, 4
OTHERS = ("pensions", "housing", "civil")  # more partners of the agency (no grants needed)
SAFETY = 30.0  # client-side deadline, only so a failing test ends
AUDITOR = "audit-office"


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("streams"), registry_size=300, applicants=40,
                 grpc={"server_threads": THREADS, "reserved_threads": RESERVED,
                       "partner_streams": CAP, "idle_seconds": IDLE, "deadline_seconds": DEADLINE})
    path = s.fed.nodes["hrss"].config_path  # more partners, so together they exceed the slots
    config = tomllib.loads(path.read_text())
    config["partners"] += [{"id": p} for p in OTHERS]
    config["auditors"] = [{"id": AUDITOR}]
    path.write_bytes(tomli_w.dumps(config).encode())
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def _held(first: list, release: threading.Event):
    """Requests: `first`, then nothing until `release` (the stream stays open and idle)."""
    yield from first
    release.wait()


def _outcome(call) -> grpc.StatusCode:
    try:
        for _ in call:
            pass
    except grpc.RpcError:
        pass
    return call.code()


def _open_idle(s, ch, n: int, release: threading.Event):
    stub = pb_grpc.MembershipStub(ch)
    firsts = [[] if i % 2 == 0 else [header(s, total=3)] for i in range(n)]  # half send a header
    # The client's own deadline is far beyond the node's limits (it only bounds the test).
    return [stub.Evaluate(_held(first, release), timeout=SAFETY) for first in firsts]


def _quick(s, node_id: str = "fund"):
    """Health and ListDatasets, each timed; both must answer within a second."""
    with channel_as(s, node_id) as ch:
        t0 = time.monotonic()
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=1)
        t1 = time.monotonic()
        listing = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=1)
        t2 = time.monotonic()
    assert status.status == health_pb2.HealthCheckResponse.SERVING
    assert [d.name for d in listing.datasets] == (["flexible_workers"] if node_id == "fund" else [])
    return t1 - t0, t2 - t1


def test_idle_streams_do_not_starve_health_listing_and_are_cancelled(scenario):
    release = threading.Event()
    ch = channel_as(scenario, "fund")
    try:
        opened = time.monotonic()
        calls = _open_idle(scenario, ch, 32, release)
        time.sleep(0.5)  # every stream has reached the node and is idle now
        for _ in range(3):
            health_s, listing_s = _quick(scenario)
            assert health_s < 1.0 and listing_s < 1.0
        codes = [_outcome(c) for c in calls]
        ended = time.monotonic() - opened
        refused = [c for c in calls if c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert codes.count(grpc.StatusCode.CANCELLED) == CAP, codes
        assert len(refused) == 32 - CAP, codes
        assert all(f"at most {CAP} at once" in c.details() for c in refused)
        assert IDLE <= ended < IDLE + 3.0  # cancelled for idleness, not at the deadline
        # the slots are free again: an honest query is answered
        replies = fx.evaluate(scenario, [header(scenario),
                                         pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(3))),
                                         pb.EvaluateRequest(finish=pb.Finish())])
        assert replies[-1].summary.elements_evaluated == 3
    finally:
        release.set()
        ch.close()


def test_stream_over_the_partner_cap_is_refused(scenario):
    release = threading.Event()
    ch = channel_as(scenario, "fund")
    try:
        stub = pb_grpc.MembershipStub(ch)
        held = [stub.Evaluate(_held([header(scenario, total=3)], release), timeout=SAFETY)
                for _ in range(CAP)]
        for call in held:
            assert next(call).HasField("accepted")  # admitted, now idle within the cap
        with pytest.raises(grpc.RpcError) as exc:
            list(stub.Evaluate(_held([header(scenario, total=3)], release), timeout=5))
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "'fund'" in exc.value.details() and f"at most {CAP} at once" in exc.value.details()
        for call in held:
            assert _outcome(call) == grpc.StatusCode.CANCELLED
    finally:
        release.set()
        ch.close()


def test_trickling_stream_is_cancelled_at_the_node_deadline(scenario):
    """Never idle for long, yet never finishing: the node's own deadline ends it."""
    stop = threading.Event()

    def trickle():
        yield header(scenario, total=10_000)
        seq = 0
        while not stop.wait(IDLE / 3):
            yield pb.EvaluateRequest(batch=pb.ElementBatch(seq=seq, elements=blinded(1)))
            seq += 1

    with channel_as(scenario, "fund") as ch:
        started = time.monotonic()
        call = pb_grpc.MembershipStub(ch).Evaluate(trickle(), timeout=SAFETY)
        answered = 0
        try:
            for reply in call:
                answered += reply.HasField("batch")
        except grpc.RpcError:
            pass
        finally:
            stop.set()
        took = time.monotonic() - started
    assert call.code() == grpc.StatusCode.CANCELLED
    assert answered >= 3  # it was answered while it kept sending
    assert DEADLINE <= took < DEADLINE + 3.0


def test_idle_streams_of_several_partners_leave_the_reserved_workers(scenario):
    """Four partners, each within its cap, together ask for more than the work slots."""
    release = threading.Event()
    channels = [channel_as(scenario, p) for p in ("fund", *OTHERS)]
    try:
        calls = [pb_grpc.MembershipStub(ch).Evaluate(_held([], release), timeout=SAFETY)
                 for ch in channels for _ in range(CAP)]
        time.sleep(0.5)
        health_s, listing_s = _quick(scenario)
        assert health_s < 1.0 and listing_s < 1.0
        codes = [_outcome(c) for c in calls]
        busy = [c for c in calls if c.code() == grpc.StatusCode.RESOURCE_EXHAUSTED]
        assert codes.count(grpc.StatusCode.CANCELLED) == THREADS - RESERVED, codes
        assert len(busy) == len(calls) - (THREADS - RESERVED)
        assert all("as many calls as it can" in c.details() for c in busy)
    finally:
        release.set()
        for ch in channels:
            ch.close()


def test_health_watch_streams_cannot_take_the_reserved_workers(scenario):
    """Watch is open to any federation member and never ends by itself."""
    channels = [channel_as(scenario, f"stranger{i}") for i in range(3)]
    try:
        watches = [health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=SAFETY)
                   for ch in channels for _ in range(2)]
        time.sleep(0.5)
        health_s, listing_s = _quick(scenario)
        assert health_s < 1.0 and listing_s < 1.0
        refused = []
        for w in watches:
            try:
                next(w)  # a held watch sends the current status first
            except grpc.RpcError as exc:
                refused.append(exc)
        assert len(refused) == len(watches) - RESERVED // 2
        assert all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
    finally:
        for ch in channels:
            ch.close()


@pytest.mark.parametrize("method", ["/shuqiao.v1.Membership/PrepareTable",
                                    "/shuqiao.v1.Membership/ListDatasets"])
def test_unary_calls_whose_request_never_comes_are_bounded(scenario, method):
    """Headers of a unary call and then nothing: the request the server waits for never
    arrives (a raw client does this by calling the unary method as a stream)."""
    release = threading.Event()
    ch = channel_as(scenario, "fund")
    try:
        hang = ch.stream_stream(method, request_serializer=lambda m: m.SerializeToString(),
                                response_deserializer=lambda b: b)
        opened = time.monotonic()
        calls = [hang(_held([], release), timeout=SAFETY) for _ in range(32)]
        time.sleep(0.5)
        health_s, listing_s = _quick(scenario, OTHERS[0])  # another partner is served at once
        assert health_s < 1.0 and listing_s < 1.0
        codes = [_outcome(c) for c in calls]
        assert codes.count(grpc.StatusCode.RESOURCE_EXHAUSTED) >= 32 - CAP, codes
        assert set(codes) == {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED}
        assert time.monotonic() - opened < IDLE + 3.0
    finally:
        release.set()
        ch.close()


def test_partners_holding_every_stream_slot_do_not_lock_the_auditor_out(scenario):
    """Health Watch streams from partners fill the reserved stream slots; a configured
    auditor's ledger stream still has a slot of its own."""
    from node.rpc.shuqiao.v1 import ledger_pb2, ledger_pb2_grpc
    channels = [channel_as(scenario, f"holder{i}") for i in range(RESERVED)]
    try:
        watches = [health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(), timeout=SAFETY)
                   for ch in channels]
        held = 0
        for w in watches:
            try:
                next(w)
                held += 1
            except grpc.RpcError:
                pass
        assert held == RESERVED // 2  # every partner stream slot is taken
        with channel_as(scenario, AUDITOR) as ch:
            stub = ledger_pb2_grpc.LedgerStub(ch)
            size = stub.GetTreeHead(ledger_pb2.GetTreeHeadRequest(), timeout=5).size
            entries = list(stub.GetEntries(ledger_pb2.GetEntriesRequest(start=0, end=size), timeout=5))
        assert size > 0 and len(entries) == size
    finally:
        for ch in channels:
            ch.close()
