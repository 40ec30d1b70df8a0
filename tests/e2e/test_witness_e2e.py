"""Witnessing between real nodes: each node gets its head cosigned by its partner."""
from __future__ import annotations

import time

import pytest

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger.witness import Witness

from . import fixtures as fx

pytestmark = pytest.mark.e2e


def test_partners_cosign_each_others_heads(tmp_path):
    s = fx.build(tmp_path, registry_size=100, applicants=20)
    fast = {"maintenance": {"witness_seconds": 1.0}}
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra=fast)
    with s.fed:
        fx.start(s)
        fx.register(s)
        fx.query(s, tmp_path / "r.csv", check=True)
        s.fed.start("fund")          # its maintenance thread witnesses hrss every second
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ctx = NodeContext(load_config(s.fed.nodes["fund"].config_path))
            try:
                cosigned = Witness(ctx.ledger).cosignatures()
                if cosigned:
                    break
            finally:
                ctx.close()
            time.sleep(0.5)
    assert cosigned, "the fund centre's head was never cosigned by its partner"
    assert all(c.witness == "hrss" for c in cosigned)
    hrss = NodeContext(load_config(s.fed.nodes["hrss"].config_path))
    try:
        assert not Witness(hrss.ledger).conflicts()
        # the answering node kept what it saw of the fund centre's log
        assert hrss.ledger.verify_all().ok
    finally:
        hrss.close()
