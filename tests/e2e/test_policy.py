"""The agency's policy between real nodes: sizes, quotas and kinds, each refused and logged."""
from __future__ import annotations

import uuid

import grpc
import pytest

from node.rpc.shuqiao.v1 import membership_pb2 as pb

from . import fixtures as fx
from .fixtures import blinded, evaluate, header, hrss_log, refusal

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("policy"), registry_size=300, applicants=50,
                 grant={"min_elements": 5, "max_elements": 40, "daily_elements": 60,
                        "purposes": [{"code": fx.PURPOSE, "legal_basis": "常公积金〔2024〕12号"}]})
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def ask(s, n: int, query_id: str | None = None):
    return [header(s, total=n, query_id=query_id),
            pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(n))),
            pb.EvaluateRequest(finish=pb.Finish())]


def test_sizes_and_daily_quota(scenario):
    small = refusal(scenario, ask(scenario, 4))
    assert small.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at least 5 elements" in small.details()
    big = refusal(scenario, ask(scenario, 41))
    assert big.code() == grpc.StatusCode.INVALID_ARGUMENT and "at most 40" in big.details()
    evaluate(scenario, ask(scenario, 40))
    evaluate(scenario, ask(scenario, 20))
    qid = str(uuid.uuid4())
    over = refusal(scenario, ask(scenario, 5, query_id=qid))
    assert over.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "daily quota of 60 elements" in over.details() and "(60 used, 5 asked)" in over.details()
    (entry,) = [e for e in hrss_log(scenario) if e["query_id"] == qid]
    assert entry["outcome"] == "refused" and "quota" in entry["reason"]


def test_ungranted_kind_is_permission_denied(scenario):
    d = fx.info(scenario)
    msgs = [pb.EvaluateRequest(header=pb.QueryHeader(
        query_id=str(uuid.uuid4()), dataset="flexible_workers", version=d.version, epoch=d.epoch,
        purpose=fx.PURPOSE, total_elements=5, kind=pb.QUERY_KIND_UNSPECIFIED))]
    assert refusal(scenario, msgs).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_policy_is_visible_to_the_admin(scenario):
    show = scenario.fed.cli("dataset", "show", "--config", scenario.cfg("hrss"), "flexible_workers").stdout
    assert "常公积金〔2024〕12号" in show


def test_a_kind_outside_the_grant_is_permission_denied(scenario, tmp_path):
    r = fx.query(scenario, tmp_path / "labeled.csv", "--kind", "labeled")
    assert r.returncode == 1
    assert "offers no labels" in r.stderr or "not granted" in r.stderr
    r = fx.query(scenario, tmp_path / "pred.csv", "--kind", "predicate", "--predicate", "缴费月数 >= 6")
    assert r.returncode == 1 and "predicate queries are not granted" in r.stderr


def test_the_agency_itself_refuses_an_ungranted_kind(scenario):
    d = fx.info(scenario)
    msgs = [pb.EvaluateRequest(header=pb.QueryHeader(
        query_id=str(uuid.uuid4()), dataset="flexible_workers", version=d.version, epoch=d.epoch,
        purpose=fx.PURPOSE, total_elements=5, kind=pb.QUERY_KIND_LABELED))]
    err = refusal(scenario, msgs)
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "query kind 'labeled' is not granted" in err.details()
