"""Durability: the answering node is killed with SIGKILL many times while it answers.

Afterwards every acknowledged query (the asker holds a verified receipt) is in the
answering node's ledger exactly once, the ledger verifies from its database, and every
tree head a receipt named is consistent with the final head.
"""
from __future__ import annotations

import random
import socket
import threading
import time

import pytest

from adapters import IdType, encode
from node.asker import membership as asker
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger import decode
from protocols import merkle

from . import fixtures as fx

pytestmark = pytest.mark.e2e
KILLS = 50


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_fifty_sigkills_lose_no_acknowledged_query(tmp_path):
    s = fx.build(tmp_path, registry_size=300, applicants=40, grpc={"listen": f"127.0.0.1:{free_port()}"})
    fx.start(s)
    fx.register(s)
    fund = NodeContext(load_config(s.fed.nodes["fund"].config_path))
    inputs = [encode(IdType.CN_RESIDENT_ID, p) for p in s.applicants]
    acknowledged: dict[str, object] = {}
    failures = 0
    rng = random.Random(9)
    try:
        for _ in range(KILLS):
            stop = threading.Event()

            def ask() -> None:
                nonlocal failures
                while not stop.is_set():
                    try:
                        r = asker.membership(fund, "hrss", "flexible_workers", fx.PURPOSE, inputs)
                        assert r.receipt is not None
                        acknowledged[r.query_id] = r.receipt
                    except asker.PartnerError:
                        failures += 1
                        fund.channels.pop("hrss", None)
                        time.sleep(0.05)

            t = threading.Thread(target=ask)
            t.start()
            time.sleep(rng.uniform(0.1, 0.5))
            s.fed.stop("hrss", kill=True)
            stop.set()
            t.join(30)
            s.fed.start("hrss")
    finally:
        fund.close()
    s.fed.close()
    assert len(acknowledged) >= KILLS // 2 and failures >= 1

    hrss = NodeContext(load_config(s.fed.nodes["hrss"].config_path))
    try:
        assert hrss.ledger.verify_all().ok
        completed: dict[str, int] = {}
        for _, data in hrss.ledger.entries(0, hrss.ledger.size()):
            e = decode(bytes(data))
            if getattr(e, "type", "") == "query" and e.phase == "completed":
                completed[e.query_id] = completed.get(e.query_id, 0) + 1
        for qid, receipt in acknowledged.items():
            assert completed.get(qid) == 1, "an acknowledged query is missing or duplicated"
        final = hrss.ledger.sign_head(force=True)
        for receipt in acknowledged.values():
            proof = hrss.ledger.consistency_proof(receipt.tree_size, final.size)
            merkle.verify_consistency(receipt.tree_size, final.size, receipt.root, final.root, proof)
    finally:
        hrss.close()
