"""A review of the controls against an overreaching partner, attacked over the raw wire.

Each test is one attack its control's author may have missed; each must be able to fail.
"""
from __future__ import annotations

import time

import grpc
import pytest

from node.config import load_config
from node.context import NodeContext
from node.ledger import canonical
from node.ledger.witness import Witness
from node.rpc.shuqiao.v1 import ledger_pb2 as lpb
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as lpb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("review"), registry_size=50, applicants=10)
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
