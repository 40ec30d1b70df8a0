"""A misbehaving partner speaking the Ledger service's Exchange call directly.

A witness takes a peer's notes only as far as the signatures carry them: forged heads,
forged cosignatures and fabricated conflicts must not raise an alarm or be stored.
"""
from __future__ import annotations

import time

import grpc
import pytest

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger import canonical
from node.ledger.signing import LedgerSigningKey, partner_key
from node.ledger.witness import Witness
from node.rpc.shuqiao.v1 import ledger_pb2 as lpb
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as lpb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def witnessed(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("exchange"), registry_size=50, applicants=10)
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra={"maintenance": {"witness_seconds": 1.0}})
    fx.start(s)
    s.fed.start("fund")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not pinned(s, "fund"):
        time.sleep(0.5)
    s.fed.stop("fund")  # from here on, only the attacker speaks for "fund"
    yield s
    s.fed.close()


def pinned(s, partner):
    ctx = NodeContext(load_config(s.cfg("hrss")))
    try:
        return partner_key(ctx.engine, partner)
    finally:
        ctx.close()


def hrss_state(s):
    ctx = NodeContext(load_config(s.cfg("hrss")))
    try:
        w = Witness(ctx.ledger)
        return w.all_conflicts(), w.cosignatures(), ctx.ledger.sign_head()
    finally:
        ctx.close()


def exchange(s, doc: dict, as_node="fund"):
    with fx.channel_as(s, as_node) as ch:
        return lpb_grpc.LedgerStub(ch).Exchange(lpb.WitnessDocument(document=canonical.dump(doc)),
                                                timeout=10)


def test_fabricated_conflicts_and_cosignatures_from_a_partner_raise_no_alarm(witnessed):
    s = witnessed
    conflicts_before, cosignatures_before, head = hrss_state(s)
    forger = LedgerSigningKey.generate("hrss")   # claims to be hrss's key
    fund_forger = LedgerSigningKey.generate("fund")
    fake_own = forger.sign_head(head.size + 5, b"\x07" * 32, head.time)  # "you were rolled back"
    forked = [fund_forger.sign_head(3, bytes([i]) * 32, head.time) for i in (1, 2)]
    doc = {"v": 1,
           # a cosignature by "fund" over a head hrss never signed
           "for_you": [fund_forger.cosign(fake_own, head.time).to_dict()],
           # a third-party head under a key hrss never pinned, and hrss's own "other history"
           "cosigned": [{"head": fake_own.to_dict(), "cosignatures": []},
                        {"head": forger.sign_head(head.size, b"\x09" * 32, head.time).to_dict(),
                         "cosignatures": []}],
           # a "fork" of fund's log, signed by a key that is not fund's pinned key
           "conflicts": [{"partner": "fund", "kind": "fork", "first": forked[0].to_dict(),
                          "second": forked[1].to_dict()}]}
    answer = exchange(s, doc)
    assert canonical.parse(answer.document)["v"] == 1
    conflicts, cosignatures, _ = hrss_state(s)
    assert conflicts == conflicts_before == []
    assert cosignatures == cosignatures_before
    log = (s.fed.nodes["hrss"].directory / "serve.log").read_text()
    assert "LEDGER ALARM" not in log


def test_exchange_from_a_node_that_is_not_a_partner_is_refused(witnessed):
    with pytest.raises(grpc.RpcError) as exc:
        exchange(witnessed, {"v": 1, "for_you": [], "cosigned": [], "conflicts": []}, as_node="edu")
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_malformed_exchange_document_is_refused(witnessed):
    with fx.channel_as(witnessed, "fund") as ch:
        with pytest.raises(grpc.RpcError) as exc:
            lpb_grpc.LedgerStub(ch).Exchange(lpb.WitnessDocument(document=b'{"v":1,"for_you":[{"x":1}]}'),
                                             timeout=10)
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
