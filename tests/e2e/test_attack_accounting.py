"""An authorised fund centre overreaching on the agency's accounting, over the raw wire.

Each test is one attack: repeated elements that amplify a count, breaking the protocol
after being answered to dodge the quota, racing admissions past a quota or a DP budget,
and one query id run on many streams. The agency must answer no more than its policy
allows, and charge every element it evaluated.
"""
from __future__ import annotations

import threading
import time
import uuid

import grpc
import pytest
import sqlalchemy as sa

from node.rpc.shuqiao.v1 import membership_pb2 as pb
from tests.conftest import PG_ADMIN_URL, unavailable

from . import adversary as adv

pytestmark = pytest.mark.e2e

QUOTA = 100  # daily elements of the protocol-breaking partners
RACE_QUOTA, RACE_SIZE, RACERS = 1000, 200, 20  # five fit; a per-partner stream cap of 8 still races
DP = {"kinds": ["cardinality"], "dp_epsilon": 0.5, "dp_budget": 2.0}  # four noised queries
RACE_GRANTS = {"racer": {"daily_elements": RACE_QUOTA}, "spender": DP}
GRANTS = {
    "dup-card": {"kinds": ["cardinality"]},
    "dup-agg": {"kinds": ["aggregate"]},
    "matcher": {"kinds": ["aggregate"], "daily_elements": 20},
    "sharer": {"kinds": ["cardinality", "aggregate"], "dp_epsilon": 1.0, "dp_budget": 1.0},
    "dup-memb": {"kinds": ["membership"]},
    "finisher": {"daily_elements": QUOTA},
    "breaker": {"daily_elements": QUOTA},
    "prover": {"daily_elements": QUOTA},
    "dropper": {"daily_elements": QUOTA},
    "replayer": {},
    "releaser": {"daily_elements": QUOTA},
    "redactee": {"kinds": ["membership", "predicate"], "predicate_columns": ["所属区"]},
    **RACE_GRANTS,
}


@pytest.fixture(scope="module")
def agency(tmp_path_factory):
    s = adv.federation(tmp_path_factory.mktemp("accounting"), GRANTS)
    yield s
    s.fed.close()


@pytest.fixture(scope="module")
def pg_agency(tmp_path_factory):
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"shuqiao_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unavailable(f"PostgreSQL is not reachable: {type(exc.orig).__name__}")
    s = adv.federation(tmp_path_factory.mktemp("accounting-pg"), RACE_GRANTS,
                       storage_url=PG_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}")
    yield s
    s.fed.close()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request):
    return request.getfixturevalue("agency" if request.param == "sqlite" else "pg_agency")


def bodies(responses) -> list[str]:
    return [r.WhichOneof("body") for r in responses]


# -- 1. repeated elements ----------------------------------------------------------------

def test_cardinality_of_one_member_asked_many_times_is_refused_before_any_answer(agency):
    member = adv.element(agency, agency.registry[0])
    req = adv.CountRequest([member] * 200)  # exact count 200 would name the member
    got, err = adv.cardinality(agency, "dup-card",
                               adv.cardinality_messages(adv.dataset_info(agency, "dup-card"), req))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repeats an element" in err.details()
    assert bodies(got) == ["accepted"]  # no blinded set, no rows: nothing to count with
    (row,) = adv.answerer_log(agency, "dup-card")
    assert row["outcome"] == "refused" and row["epsilon_micro"] == 0


def test_cardinality_floor_counts_distinct_elements(agency):
    """Nine people plus one repeated: ten elements, nine distinct, under a floor of ten."""
    ids = [adv.element(agency, p) for p in agency.registry[:9]]
    req = adv.CountRequest(ids + ids[:1])
    got, err = adv.cardinality(agency, "dup-card",
                               adv.cardinality_messages(adv.dataset_info(agency, "dup-card"), req))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert bodies(got) == ["accepted"]
    small = adv.CountRequest(ids)  # nine distinct: under the counting kinds' default floor
    got, err = adv.cardinality(agency, "dup-card",
                               adv.cardinality_messages(adv.dataset_info(agency, "dup-card"), small))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 10 elements" in err.details() and got == []


def test_aggregate_match_of_one_member_repeated_is_refused_before_any_answer(agency):
    member = adv.element(agency, agency.registry[0])
    got, err = adv.aggregate(agency, "dup-agg", [member] * 50)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repeats an element" in err.details()
    assert bodies(got) == ["accepted"]  # no match response left the agency


def test_membership_batch_repeating_an_earlier_element_is_refused(agency):
    d = adv.dataset_info(agency, "dup-memb")
    first = adv.blinded(10)
    again = first[32:64] + adv.blinded(9)
    got, err = adv.evaluate(agency, "dup-memb", [
        adv.membership_header(d, 20), adv.batch(0, first), adv.batch(1, again), adv.finish()])
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "repeats a blinded element" in err.details()
    assert adv.evaluations_received(got) == 10  # the repeat's batch was not evaluated
    (row,) = adv.answerer_log(agency, "dup-memb")
    assert row["outcome"] == "broken_by_asker" and row["elements"] == 10


# -- 2. breaking the protocol after being answered ----------------------------------------

def _rounds(agency, partner: str, make, *, cancel_after=None) -> tuple[int, list]:
    """Five rounds of one protocol-breaking query; (evaluations received, errors)."""
    received, errors = 0, []
    for _ in range(5):
        got, err = adv.evaluate(agency, partner, make(adv.dataset_info(agency, partner)),
                                cancel_after=cancel_after)
        received += adv.evaluations_received(got)
        errors.append(err)
    return received, errors


def _assert_charged(agency, partner: str, received: int, errors: list, outcome: str) -> None:
    assert received <= QUOTA
    assert errors[-1] is not None and errors[-1].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rows = adv.answerer_log(agency, partner)
    broken = [r for r in rows if r["outcome"] == outcome]
    assert broken and sum(r["elements"] for r in broken) == received


def test_finish_early_after_the_evaluations_is_charged(agency):
    received, errors = _rounds(agency, "finisher", lambda d: [
        adv.membership_header(d, 97), adv.batch(0, adv.blinded(96)), adv.finish()])
    _assert_charged(agency, "finisher", received, errors, "broken_by_asker")
    check = agency.fed.cli("audit", "check", "--config", agency.cfg("hrss"), check=False)
    assert check.returncode == 0, check.stdout + check.stderr  # the new outcome verifies


def test_invalid_element_in_a_later_batch_is_charged_for_the_earlier_ones(agency):
    received, errors = _rounds(agency, "breaker", lambda d: [
        adv.membership_header(d, 97), adv.batch(0, adv.blinded(48)),
        adv.batch(1, adv.blinded(47) + adv.INVALID_ELEMENT), adv.finish()])
    _assert_charged(agency, "breaker", received, errors, "broken_by_asker")


def test_malformed_proof_request_after_the_evaluations_is_charged(agency):
    received, errors = _rounds(agency, "prover", lambda d: [
        adv.membership_header(d, 97), adv.batch(0, adv.blinded(96)),
        pb.EvaluateRequest(proof_request=pb.ProofRequest(seq=7, indices=[3, 1])), adv.finish()])
    _assert_charged(agency, "prover", received, errors, "broken_by_asker")


def test_dropping_the_stream_after_the_evaluations_is_charged(agency):
    never = threading.Event()

    def make(d):
        yield adv.membership_header(d, 97)
        yield adv.batch(0, adv.blinded(96))
        never.wait(10)  # no finish: the client drops the stream instead
    try:
        received, errors = _rounds(agency, "dropper", make, cancel_after=2)
    finally:
        never.set()
    assert received <= QUOTA
    rows = adv.answerer_log(agency, "dropper")
    assert sum(r["elements"] for r in rows if r["outcome"] != "refused") == received


def test_aggregate_broken_after_the_match_is_charged(agency):
    """Take the match (the exact intersection size, to the asker's software), then send
    junk instead of the masked sums: five rounds against a daily quota of 20."""
    from node.rpc.shuqiao.v1 import statistics_pb2 as spb
    junk = spb.AggregateRequest(masked=spb.StatisticsChunk(data=b"junk", last=True))
    ids = [adv.element(agency, p) for p in agency.registry[:10]]
    results = [adv.aggregate(agency, "matcher", ids, then=[junk]) for _ in range(5)]
    matches = sum(adv.matched_rows_seen(got) for got, _ in results)
    assert matches == 2  # 2 x 10 elements: the quota, charged although neither finished
    assert results[-1][1].code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rows = adv.answerer_log(agency, "matcher")
    assert [r["elements"] for r in rows if r["outcome"] == "broken_by_asker"] == [10, 10]


# -- 3. racing admissions ----------------------------------------------------------------

def test_concurrent_queries_cannot_exceed_the_daily_quota(backend):
    d = adv.dataset_info(backend, "racer")
    with adv.Gate(RACERS) as gate:
        results = adv.race(RACERS, lambda _: adv.evaluate(
            backend, "racer", adv.held_membership(d, RACE_SIZE, gate.go), on_first=gate.arrived))
    answered = [got for got, err in results if err is None and "summary" in bodies(got)]
    received = sum(adv.evaluations_received(got) for got, _ in results)
    assert 1 <= len(answered) and received <= RACE_QUOTA
    for _, err in results:
        assert err is None or err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rows = adv.answerer_log(backend, "racer")
    used = sum(r["elements"] for r in rows if r["outcome"] == "answered")
    assert used == received <= RACE_QUOTA
    # Every reservation was settled exactly: what is left of the quota can be asked, no more.
    d = adv.dataset_info(backend, "racer")
    if used < RACE_QUOTA:
        rest = RACE_QUOTA - used
        got, err = adv.evaluate(backend, "racer", [adv.membership_header(d, rest),
                                                   adv.batch(0, adv.blinded(rest)), adv.finish()])
        assert err is None and "summary" in bodies(got)
    _, err = adv.evaluate(backend, "racer", [adv.membership_header(d, 1), adv.batch(0, adv.blinded(1)),
                                             adv.finish()])
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_concurrent_noised_counts_cannot_overspend_the_dp_budget(backend):
    ids = [adv.element(backend, p) for p in backend.registry[:10]]
    d = adv.dataset_info(backend, "spender")
    with adv.Gate(RACERS) as gate:
        results = adv.race(RACERS, lambda _: adv.cardinality(
            backend, "spender", adv.cardinality_messages(d, adv.CountRequest(ids), hold=gate.go),
            on_first=gate.arrived))
    spent = sum(r.summary.epsilon_micro for got, _ in results for r in got
                if r.WhichOneof("body") == "summary")
    assert 0 < spent <= 2_000_000
    for got, err in results:
        assert err is None or err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    rows = adv.answerer_log(backend, "spender")
    assert sum(r["epsilon_micro"] for r in rows) == spent
    # Every reservation was settled exactly: another query is admitted iff budget is left.
    _, err = adv.cardinality(backend, "spender", adv.cardinality_messages(d, adv.CountRequest(ids)))
    if spent <= 1_500_000:
        assert err is None
    else:
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_reservation_of_a_killed_node_still_counts_after_restart(tmp_path):
    """Admitted, then the agency is killed before settling: the reservation must not vanish."""
    s = adv.federation(tmp_path, {"survivor": {"daily_elements": QUOTA}})
    try:
        d = adv.dataset_info(s, "survivor")
        admitted, hold = threading.Event(), threading.Event()
        held = threading.Thread(target=adv.evaluate, args=(s, "survivor", adv.held_membership(d, 60, hold)),
                                kwargs={"on_first": admitted.set}, daemon=True)
        held.start()
        assert admitted.wait(20)
        s.fed.stop("hrss", kill=True)
        hold.set()
        held.join(30)
        s.fed.start("hrss")
        d = adv.dataset_info(s, "survivor")
        _, err = adv.evaluate(s, "survivor", [adv.membership_header(d, 60), adv.batch(0, adv.blinded(60)),
                                              adv.finish()])
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        got, err = adv.evaluate(s, "survivor", [adv.membership_header(d, 40), adv.batch(0, adv.blinded(40)),
                                                adv.finish()])
        assert err is None and "summary" in bodies(got)
    finally:
        s.fed.close()


def test_open_aggregate_holds_the_dp_budget_it_shares_with_cardinality(agency):
    """An admitted aggregate reserves the epsilon a cardinality query would spend from the
    same budget; it is released when the aggregate ends without releasing any figure."""
    ids = [adv.element(agency, p) for p in agency.registry[:10]]
    d = adv.dataset_info(agency, "sharer")
    admitted, hold = threading.Event(), threading.Event()
    open_aggregate = threading.Thread(target=adv.aggregate, args=(agency, "sharer", ids), daemon=True,
                                      kwargs={"hold": hold, "on_first": admitted.set})
    open_aggregate.start()
    try:
        assert admitted.wait(20)
        _, err = adv.cardinality(agency, "sharer", adv.cardinality_messages(d, adv.CountRequest(ids)))
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        hold.set()  # the aggregate takes its match and goes away before any release
        open_aggregate.join(30)
    for _ in range(50):  # its unspent epsilon comes back once the agency has settled it
        _, err = adv.cardinality(agency, "sharer", adv.cardinality_messages(d, adv.CountRequest(ids)))
        if err is None:
            break
        time.sleep(0.1)
    assert err is None
    _, err = adv.cardinality(agency, "sharer", adv.cardinality_messages(d, adv.CountRequest(ids)))
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    got, err = adv.aggregate(agency, "sharer", ids)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and got == []


# -- 4. one query id, many executions -------------------------------------------------------

def test_one_query_id_on_five_concurrent_streams_is_answered_once(agency):
    qid = str(uuid.uuid4())
    d = adv.dataset_info(agency, "replayer")
    with adv.Gate(5) as gate:
        results = adv.race(5, lambda _: adv.evaluate(
            agency, "replayer", adv.held_membership(d, 20, gate.go, query_id=qid),
            on_first=gate.arrived))
    receipts = [r.summary.receipt for got, _ in results for r in got if r.WhichOneof("body") == "summary"]
    assert len(receipts) == 1
    refused = [err for _, err in results if err is not None]
    assert len(refused) == 4 and {e.code() for e in refused} == {grpc.StatusCode.ALREADY_EXISTS}
    rows = [r for r in adv.answerer_log(agency, "replayer") if r["query_id"] == qid]
    assert [r["outcome"] for r in rows] == ["answered"]


def test_refused_stream_reusing_an_admitted_id_does_not_release_its_reservation(agency):
    qid = str(uuid.uuid4())
    d = adv.dataset_info(agency, "releaser")
    admitted, hold = threading.Event(), threading.Event()
    first = threading.Thread(target=adv.evaluate, daemon=True, kwargs={"on_first": admitted.set},
                             args=(agency, "releaser", adv.held_membership(d, 60, hold, query_id=qid)))
    first.start()
    try:
        assert admitted.wait(20)
        _, err = adv.evaluate(agency, "releaser", [adv.membership_header(d, 0, query_id=qid)])
        assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
        _, err = adv.evaluate(agency, "releaser", [adv.membership_header(d, 60),
                                                   adv.batch(0, adv.blinded(60)), adv.finish()])
        assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        hold.set()
        first.join(30)
    rows = [r for r in adv.answerer_log(agency, "releaser") if r["query_id"] == qid]
    assert [r["outcome"] for r in rows] == ["answered"]  # one record per id: the claim's


# -- 13. identifiers smuggled into the query log through a predicate ------------------------

def test_identifier_in_a_predicate_is_redacted_in_the_query_log(agency):
    from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
    from tests.e2e import fixtures as fx
    person = agency.registry[1]
    with fx.channel_as(agency, "redactee") as ch:
        d = pb_grpc.MembershipStub(ch).PrepareTable(pb.PrepareTableRequest(
            dataset=adv.DATASET, predicate=f'所属区 == "{person}"'), timeout=20)
    assert person in d.predicate
    header = adv.membership_header(d, 3)
    header.header.kind, header.header.predicate = pb.QUERY_KIND_PREDICATE, d.predicate
    got, err = adv.evaluate(agency, "redactee", [header, adv.batch(0, adv.blinded(3)), adv.finish()])
    assert err is None and "summary" in bodies(got)
    (row,) = adv.answerer_log(agency, "redactee")
    assert person not in row["predicate"] and "[redacted]" in row["predicate"]
