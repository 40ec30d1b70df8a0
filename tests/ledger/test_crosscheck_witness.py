"""Two nodes' ledgers side by side: per-query cross-check, and witnessing each other's heads."""
from __future__ import annotations

import dataclasses
import uuid
from concurrent import futures

import grpc
import pytest

from node.ledger import Ledger, decode, make_receipt, verify_receipt
from node.ledger.crosscheck import cross_check
from node.ledger.grpc_service import LedgerService, ask_cosignature
from node.ledger.signing import Cosignature
from node.ledger.sources import LedgerSource
from node.ledger.witness import Witness, WitnessError
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as pb_grpc
from protocols import merkle

from .helpers import fill, make_ledger, open_engine, query


@pytest.fixture
def fund(tmp_path):
    return make_ledger(open_engine(f"sqlite:///{tmp_path / 'fund.db'}"), "fund")


@pytest.fixture
def hrss(tmp_path):
    return make_ledger(open_engine(f"sqlite:///{tmp_path / 'hrss.db'}"), "hrss")


def ask(asker: Ledger, answerer: Ledger, n: int = 5, *, answerer_records: bool = True,
        asker_records: bool = True, asker_changes: dict | None = None, outcome="answered"):
    """One query as the nodes will run it: the answerer ledgers admission and completion
    (each committed with its own work), signs a receipt, the asker checks and keeps it."""
    qid = str(uuid.uuid4())
    done = query(answerer.node_id, partner=asker.node_id, query_id=qid, n=n, outcome=outcome)
    receipt = None
    if answerer_records:
        with answerer.engine.begin() as conn:
            answerer.append(conn, query(answerer.node_id, partner=asker.node_id, query_id=qid,
                                        n=n, phase="admitted"))
        with answerer.engine.begin() as conn:
            receipt = answerer.append_completed(conn, done)
        assert answerer.root(receipt.tree_size) == receipt.root
        assert answerer.find_query(qid)[-1][0] == receipt.index == receipt.tree_size - 1
    mine = query(asker.node_id, role="asker", partner=answerer.node_id, query_id=qid, n=n,
                 outcome=outcome, matched=2, receipt=receipt)
    if receipt is not None and not asker_changes:
        verify_receipt(answerer.public_key, receipt, mine.metadata())
    if asker_changes:
        mine = dataclasses.replace(mine, **asker_changes)
    if asker_records:
        with asker.engine.begin() as conn:
            asker.append(conn, mine)
    return qid


def statuses(report):
    return {q.query_id: q.status for q in report.queries}


def test_matching_ledgers_cross_check(fund, hrss):
    qids = [ask(fund, hrss, n) for n in (1, 5, 100)]
    refused = ask(fund, hrss, outcome="refused")
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert report.ok, str(report)
    assert statuses(report) == {**{q: "ok" for q in qids}, refused: "refused"}
    assert all(q.answerer_index is not None and q.asker_index is not None for q in report.queries)


def test_missing_queries_and_mismatches_are_reported(fund, hrss):
    fine = ask(fund, hrss)
    hidden_by_asker = ask(fund, hrss, asker_records=False)
    dropped_by_answerer = ask(fund, hrss, answerer_records=False)
    changed = ask(fund, hrss, 7, asker_changes={"elements": 8, "purpose": "other_purpose"})
    unreachable = ask(fund, hrss, answerer_records=False, outcome="failed")
    with hrss.engine.begin() as conn:  # admitted, then the answering node crashed
        crashed = str(uuid.uuid4())
        hrss.append(conn, query("hrss", query_id=crashed, phase="admitted"))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert not report.ok
    assert statuses(report) == {
        fine: "ok", hidden_by_asker: "missing_on_asker",
        dropped_by_answerer: "missing_on_answerer", changed: "mismatch",
        unreachable: "interrupted", crashed: "interrupted"}
    problems = next(q for q in report.queries if q.query_id == changed).problems
    assert any(p.startswith("elements: asker recorded 8, answerer recorded 7") for p in problems)
    assert any(p.startswith("purpose:") for p in problems)
    assert any("receipt field 'purpose'" in p for p in problems)  # signed over the real one


def test_receipts_that_do_not_hold_are_flagged(fund, hrss):
    missing = ask(fund, hrss, answerer_records=True, asker_changes={"receipt": None})
    stranger = make_ledger(hrss.engine, "hrss")  # a key the answering node never published
    forged_q = str(uuid.uuid4())
    with hrss.engine.begin() as conn:
        done = query("hrss", query_id=forged_q)
        index = hrss.append(conn, done)
        size, root = hrss.checkpoint(conn)
    with fund.engine.begin() as conn:
        fund.append(conn, query("fund", role="asker", partner="hrss", query_id=forged_q,
                                receipt=make_receipt(stranger.signer, done.metadata(), index,
                                                     size, root)))
    misplaced = ask(fund, hrss)
    [(_, data)] = fund.find_query(misplaced)
    reused = dataclasses.replace(decode(data), query_id=str(uuid.uuid4()))
    with fund.engine.begin() as conn:  # the same receipt reused for another query id
        fund.append(conn, reused)
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    got = statuses(report)
    assert got[missing] == "receipt_missing" and got[forged_q] == "receipt_invalid"
    assert got[misplaced] == "ok" and got[reused.query_id] == "missing_on_answerer"
    problems = next(q for q in report.queries if q.query_id == reused.query_id).problems
    assert "receipt field 'query_id'" in problems[-1]


def test_witness_cosigns_growth_and_keeps_evidence_of_forks(fund, hrss, tmp_path):
    witness = Witness(hrss)
    fill(fund, 5, partner="hrss")
    first = fund.sign_head()
    seen = witness.observe("fund", fund.public_key, first)
    assert seen.verdict == "cosigned"
    seen.cosignature.verify(hrss.public_key)
    fill(fund, 4, partner="hrss")
    second = fund.sign_head()
    assert witness.observe("fund", fund.public_key, second).need_proof_from == 5
    assert witness.observe("fund", fund.public_key, second, 5,
                           [b"\x00" * 32] * len(fund.consistency_proof(5, 9))).verdict == "inconsistent"
    ok = witness.observe("fund", fund.public_key, second, 5, fund.consistency_proof(5, 9))
    assert ok.verdict == "cosigned"
    fork = fund.signer.sign_head(9, b"\x05" * 32, second.time)
    assert witness.observe("fund", fund.public_key, fork).verdict == "fork"
    rollback = fund.signer.sign_head(3, merkle.root([]), second.time)
    assert witness.observe("fund", fund.public_key, rollback).verdict == "rollback"
    kinds = [(k, a.size, b.size) for k, a, b in witness.conflicts("fund")]
    assert kinds == [("inconsistent", 5, 9), ("fork", 9, 9), ("rollback", 9, 3)]
    assert witness.observe("fund", fund.public_key, fork).verdict == "fork"  # refused again...
    assert len(witness.conflicts("fund")) == 3  # ...but recorded once while it stays open
    recorded = [decode(d).verdict for _, d in hrss.entries()]
    # A changed head is ledgered at most once per Witness.ledger_every; conflicts always.
    assert recorded == ["cosigned", "inconsistent", "fork", "rollback"]
    with pytest.raises(WitnessError, match="another ledger key"):
        impostor = make_ledger(fund.engine, "fund")
        witness.observe("fund", impostor.public_key, impostor.sign_head(force=True))
    with pytest.raises(WitnessError, match="another node"):
        witness.observe("bureau", fund.public_key, second)
    assert hrss.verify_all().ok


def test_cosign_over_grpc(fund, hrss):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LedgerServicer_to_server(LedgerService(hrss, lambda ctx: "fund"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            fill(fund, 3, partner="hrss")
            first = ask_cosignature(fund, channel)
            assert isinstance(first, Cosignature) and first.head.size == 3
            fill(fund, 6, partner="hrss")
            second = ask_cosignature(fund, channel)  # goes through the proof round
            assert isinstance(second, Cosignature) and second.head.size == 9
            Witness(fund).store_cosignature(second, hrss.public_key)
            assert Witness(fund).cosignatures() == [second]
            with pytest.raises(WitnessError):
                Witness(fund).store_cosignature(dataclasses.replace(second, time="2025-03-01T09:00:00Z"),
                                                hrss.public_key)
            with pytest.raises(grpc.RpcError) as exc:
                ask_cosignature(hrss, channel)  # the caller is "fund": not its own head
            assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    finally:
        server.stop(None)
