"""A review of the controls against an overreaching partner, attacked over the raw wire.

Each test is one attack its control's author may have missed; each must be able to fail.
"""
from __future__ import annotations

import statistics
import threading
import time
import tomllib

import grpc
import pytest
import tomli_w
from grpc_health.v1 import health_pb2, health_pb2_grpc

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger import canonical
from node.ledger.witness import Witness
from node.rpc.shuqiao.v1 import ledger_pb2 as lpb
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as lpb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e

BYSTANDER = "pensions"


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("review"), registry_size=50, applicants=10)
    path = s.fed.nodes["hrss"].config_path  # a bystander partner, to time its calls
    config = tomllib.loads(path.read_text())
    config["partners"] += [{"id": BYSTANDER}]
    path.write_bytes(tomli_w.dumps(config).encode())
    fx.start(s)
    r = fx.register(s, "--attribute", "所属区")
    assert r.returncode == 0, r.stderr
    yield s
    s.fed.close()


def _conflicts(s, node="hrss"):
    ctx = NodeContext(load_config(s.cfg(node)))
    try:
        return Witness(ctx.ledger).all_conflicts()
    finally:
        ctx.close()


def _grow_and_head(s, ledger) -> lpb.SignedTreeHead:
    """Make hrss append one ledger entry (a refused query is ledgered), then its head."""
    fx.refusal(s, [fx.header(s, purpose="not-a-granted-purpose")])
    return ledger.GetTreeHead(lpb.GetTreeHeadRequest(), timeout=10)


def test_same_second_heads_forwarded_as_rollback_do_not_frame_an_honest_log(pair):
    """An honest log signs heads at one-second resolution: two of its heads of different
    sizes in the same second are ordinary. A partner collecting such a pair and forwarding
    it (the larger first) as "rollback evidence" must not raise an alarm against it."""
    s = pair
    before = len(_conflicts(s))
    with fx.channel_as(s, "fund") as ch:
        ledger = lpb_grpc.LedgerStub(ch)
        for _ in range(20):   # two heads a size apart, signed within the same second
            small = _grow_and_head(s, ledger)
            large = _grow_and_head(s, ledger)
            if small.time == large.time and small.size < large.size:
                break
        else:
            pytest.skip("could not get two heads signed within one second")
        as_dict = lambda h: {"v": 1, "node": h.node, "size": h.size, "root": h.root.hex(),
                             "time": h.time, "signature": h.signature.hex()}
        doc = {"v": 1, "for_you": [], "cosigned": [], "conflicts": [
            {"partner": "hrss", "kind": "rollback", "first": as_dict(large), "second": as_dict(small)}]}
        ledger.Exchange(lpb.WitnessDocument(document=canonical.dump(doc)), timeout=10)
    assert len(_conflicts(s)) == before, "an honest log was framed with a rollback alarm"


def _as_dict(h: lpb.SignedTreeHead) -> dict:
    return {"v": 1, "node": h.node, "size": h.size, "root": h.root.hex(), "time": h.time,
            "signature": h.signature.hex()}


def _health_seconds(s, node_id: str = BYSTANDER) -> float:
    with fx.channel_as(s, node_id) as ch:
        t0 = time.monotonic()
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert status.status == health_pb2.HealthCheckResponse.SERVING
        return time.monotonic() - t0


def test_many_heavy_exchange_calls_from_one_partner_do_not_starve_the_node(pair):
    """Exchange is a reserved (ledger) call, so it takes no query slot; a partner that
    sends many at once, each a maximal document of heads the node must verify and look
    up, must still leave workers for another partner's health check."""
    s = pair
    with fx.channel_as(s, "fund") as ch:
        head = lpb_grpc.LedgerStub(ch).GetTreeHead(lpb.GetTreeHeadRequest(), timeout=10)
    item = {"head": _as_dict(head), "cosignatures": []}
    per_item = len(canonical.dump(item)) + 1
    doc = canonical.dump({"v": 1, "for_you": [], "conflicts": [],
                          "cosigned": [item] * ((7 * 1024 * 1024) // per_item)})
    stop, outcomes = threading.Event(), []

    def flood():
        with fx.channel_as(s, "fund") as ch:
            stub = lpb_grpc.LedgerStub(ch)
            while not stop.is_set():
                try:
                    stub.Exchange(lpb.WitnessDocument(document=doc), timeout=60)
                    outcomes.append("ok")
                except grpc.RpcError as exc:
                    outcomes.append(exc.code().name)
                    if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
                        time.sleep(0.1)  # refused at once: retry, without flooding the wire

    threads = [threading.Thread(target=flood) for _ in range(48)]
    for t in threads:
        t.start()
    try:
        time.sleep(3)
        slow = statistics.median(_health_seconds(s) for _ in range(5))  # CPU is shared
    finally:
        stop.set()
        for t in threads:
            t.join(120)
    assert slow < 1.0, f"a bystander's health checks took {slow:.1f} s (median) under the flood ({set(outcomes)})"


PERSONAL = "320411197012153512"  # an identifier-shaped value, as a parser quotes a bad cell


def test_background_work_failures_log_no_exception_message(pair, monkeypatch, caplog):
    """A failure in the node's background work (a threshold table being prepared from the
    registered rows, a maintenance round) is logged like any incident: its type and code
    locations, never its message, which may quote a cell."""
    from node.server import serve as server
    from node.datasets import threshold_tables as threshold_store
    from node.server import witnessing

    def fails(*args, **kwargs):
        raise ValueError(f"invalid literal for int() with base 10: {PERSONAL!r}")

    ctx = NodeContext(load_config(pair.cfg("hrss")))
    caplog.set_level("INFO")
    try:
        monkeypatch.setattr(threshold_store, "prepare", fails)
        target = threshold_store.Target("flexible_workers", 1, 1, "cn_resident_id", "fund", 1,
                                        "缴费月数", 16, 1)
        assert threshold_store.prepare_in_background(ctx, target)
        deadline = time.monotonic() + 10
        while ctx.caches.preparing and time.monotonic() < deadline:
            time.sleep(0.05)
        monkeypatch.setattr(witnessing, "witness_partners", fails)
        stop = threading.Event()
        round_ = threading.Thread(target=server.maintenance, args=(ctx, stop))
        round_.start()
        deadline = time.monotonic() + 15
        while "maintenance" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        round_.join(30)
    finally:
        ctx.close()
    assert "threshold" in caplog.text and "maintenance" in caplog.text  # both failures logged
    assert PERSONAL not in caplog.text


def test_cosignatures_minted_at_many_times_are_kept_once(pair):
    """A partner may cosign this node's head as often as it likes, each time with another
    time stamp, and hand them all over in Exchange; the witness tables are append-only and
    served to auditors, so one partner's cosignature of one head is kept once."""
    from datetime import datetime, timedelta, timezone
    from node.ledger.grpc_service import head_from_pb, head_to_pb
    s = pair
    fund = NodeContext(load_config(s.cfg("fund")))
    try:
        signer = fund.ledger.signer
        with fx.channel_as(s, "fund") as ch:
            stub = lpb_grpc.LedgerStub(ch)
            own = fund.ledger.sign_head()  # pin fund's key at hrss, as a witnessing round does
            stub.Cosign(lpb.CosignRequest(head=head_to_pb(own), public_key=fund.ledger.public_key.text),
                        timeout=10)
            head = head_from_pb(stub.GetTreeHead(lpb.GetTreeHeadRequest(), timeout=10))
            start = datetime(2026, 1, 1, tzinfo=timezone.utc)
            for batch in range(3):
                minted = [signer.cosign(head, canonical.rfc3339(start + timedelta(seconds=batch * 300 + i)))
                          for i in range(300)]
                doc = {"v": 1, "for_you": [c.to_dict() for c in minted], "cosigned": [], "conflicts": []}
                stub.Exchange(lpb.WitnessDocument(document=canonical.dump(doc)), timeout=60)
    finally:
        fund.close()
    hrss = NodeContext(load_config(s.cfg("hrss")))
    try:
        kept = [c for c in Witness(hrss.ledger).cosignatures() if c.witness == "fund" and c.head == head]
    finally:
        hrss.close()
    assert len(kept) == 1, f"{len(kept)} cosignatures of one head by one partner were stored"


def test_an_older_head_arriving_after_a_newer_one_is_no_rollback_alarm(pair):
    """An honest log's push (a head it signed, then sent) can arrive after the witness
    pulled a newer head; a partner that keeps the log busy makes that race likely. A
    smaller head signed no later than one already seen is stale, not a rollback."""
    from node.runtime import admin_log
    from node.ledger.grpc_service import head_to_pb
    s = pair
    before = len(_conflicts(s))
    fund = NodeContext(load_config(s.cfg("fund")))
    try:
        with fund.engine.begin() as conn:
            admin_log.record(fund, conn, "policy_changed", "node")
        older = fund.ledger.sign_head()
        with fund.engine.begin() as conn:
            admin_log.record(fund, conn, "policy_changed", "node")
        newer = fund.ledger.sign_head()
        proof = fund.ledger.consistency_proof(older.size, newer.size)
        key = fund.ledger.public_key.text
    finally:
        fund.close()
    with fx.channel_as(s, "fund") as ch:
        stub = lpb_grpc.LedgerStub(ch)
        for head in (older, newer):   # the witness has seen both, in order
            request = lpb.CosignRequest(head=head_to_pb(head), public_key=key)
            answer = stub.Cosign(request, timeout=10)
            if answer.WhichOneof("result") == "need_proof_from":
                request.proof_from = answer.need_proof_from
                request.consistency_proof.extend(proof)
                answer = stub.Cosign(request, timeout=10)
            assert answer.WhichOneof("result") == "cosignature"
        late = stub.Cosign(lpb.CosignRequest(head=head_to_pb(older), public_key=key), timeout=10)
    assert late.WhichOneof("result") != "cosignature"
    assert len(_conflicts(s)) == before, "a late, older head of an honest log raised a rollback alarm"
