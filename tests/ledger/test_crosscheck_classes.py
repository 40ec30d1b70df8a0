"""The cross-check classifies each query id and only a genuine mismatch is a finding."""
from __future__ import annotations

import uuid

import pytest

from node.ledger.crosscheck import cross_check
from node.ledger.sources import LedgerSource

from .helpers import make_ledger, open_engine, query


@pytest.fixture
def fund(tmp_path):
    return make_ledger(open_engine(f"sqlite:///{tmp_path / 'fund.db'}"), "fund")


@pytest.fixture
def hrss(tmp_path):
    return make_ledger(open_engine(f"sqlite:///{tmp_path / 'hrss.db'}"), "hrss")


def _append(ledger, entry) -> None:
    with ledger.engine.begin() as conn:
        ledger.append(conn, entry)


def _classes(report) -> dict[str, str]:
    return {q.query_id: q.klass for q in report.queries}


def test_refusals_on_both_sides_are_not_mismatches(fund, hrss):
    # an ungranted purpose: the answerer refuses at the header (0 elements), the asker
    # recorded the 10 it meant to ask; a spent DP budget: "failed" on the asker's side
    ungranted, budget = str(uuid.uuid4()), str(uuid.uuid4())
    for qid, asker_outcome in ((ungranted, "refused"), (budget, "failed")):
        _append(hrss, query("hrss", query_id=qid, n=0, outcome="refused", version=0, epoch=0))
        _append(fund, query("fund", role="asker", partner="hrss", query_id=qid, n=10,
                            outcome=asker_outcome))
    predicate = str(uuid.uuid4())  # refused at table preparation: never in hrss's ledger
    _append(fund, query("fund", role="asker", partner="hrss", query_id=predicate, n=10,
                        outcome="refused"))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert report.ok, str(report)
    assert _classes(report) == {ungranted: "refused", budget: "refused", predicate: "refused"}
    assert "3 refused" in str(report) and "0 MISMATCH" in str(report)


def test_a_node_killed_mid_query_is_interrupted_not_missing(fund, hrss):
    qid = str(uuid.uuid4())
    _append(hrss, query("hrss", query_id=qid, phase="admitted"))
    _append(fund, query("fund", role="asker", partner="hrss", query_id=qid, outcome="failed"))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert report.ok, str(report)
    assert _classes(report) == {qid: "interrupted"}
    assert "never recorded" not in str(report)


def test_a_forged_answer_on_the_asker_side_is_a_mismatch_naming_the_id(fund, hrss):
    forged = str(uuid.uuid4())
    _append(fund, query("fund", role="asker", partner="hrss", query_id=forged, outcome="answered",
                        matched=3))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert not report.ok
    assert _classes(report) == {forged: "mismatch"}
    assert forged in str(report)


def test_refused_by_answerer_but_answered_by_asker_is_a_mismatch(fund, hrss):
    qid = str(uuid.uuid4())
    _append(hrss, query("hrss", query_id=qid, outcome="refused"))
    _append(fund, query("fund", role="asker", partner="hrss", query_id=qid, outcome="answered"))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert not report.ok and _classes(report) == {qid: "mismatch"}


def test_refusal_recorded_for_another_dataset_is_a_mismatch(fund, hrss):
    qid = str(uuid.uuid4())
    _append(hrss, query("hrss", query_id=qid, outcome="refused", dataset="graduate_roll"))
    _append(fund, query("fund", role="asker", partner="hrss", query_id=qid, outcome="refused"))
    report = cross_check(LedgerSource(fund), LedgerSource(hrss))
    assert not report.ok and _classes(report) == {qid: "mismatch"}
