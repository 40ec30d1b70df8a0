"""`shuqiao query datasets` and ListDatasets: each partner sees its own grant only, with
its quotas used and left and its DP budget left, as the agency enforces them now."""
from __future__ import annotations

import json
import ssl

import httpx
import pytest

from node.ledger.http import new_token
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e

FUND_GRANT = {"partner": "fund", "kinds": ["membership", "cardinality"],
              "purposes": [{"code": fx.PURPOSE, "legal_basis": "常公积金〔2024〕12号"}],
              "daily_elements": 1000, "epoch_elements": 5000, "dp_epsilon": 0.5, "dp_budget": 2.0,
              "min_counting_elements": 10}
EDU_GRANT = {"partner": "edu", "kinds": ["membership", "predicate"], "purposes": ["graduate-housing-support"],
             "predicate_columns": ["缴费月数"], "monthly_elements": 77, "max_elements": 500}


@pytest.fixture(scope="module")
def offered(tmp_path_factory):
    root = tmp_path_factory.mktemp("offers")
    s = fx.build(root, registry_size=300, applicants=40)
    s.fed.add_node("hrss", partners=[{"id": "fund"}, {"id": "edu"}], datasets=[{
        "name": "flexible_workers", "grants": [FUND_GRANT, EDU_GRANT]}])
    admin_token, admin_digest = new_token()
    s.fed.add_node("fund", partners=[{"id": "hrss"}], extra={
        "http": {"listen": "127.0.0.1:0", "admin_tokens": [admin_digest]}})
    s.fed.add_node("edu", partners=[{"id": "hrss"}])
    s.admin_token = admin_token
    fx.start(s)
    s.fed.set_partner_address("edu", "hrss", s.fed.nodes["hrss"].address)
    fx.register(s)
    yield s
    s.fed.close()


def listing(s, node: str) -> dict:
    r = s.fed.cli("query", "datasets", "--config", s.cfg(node), "--partner", "hrss", "--json")
    return json.loads(r.stdout)["hrss"]


def test_each_partner_sees_its_own_grant_only(offered):
    (fund,) = listing(offered, "fund")
    (edu,) = listing(offered, "edu")
    assert fund["kinds"] == ["membership", "cardinality"] and edu["kinds"] == ["membership", "predicate"]
    assert fund["grant"]["purposes"] == [{"code": fx.PURPOSE, "legal_basis": "常公积金〔2024〕12号"}]
    assert edu["grant"]["purposes"] == [{"code": "graduate-housing-support", "legal_basis": ""}]
    assert fund["grant"]["predicate_columns"] == [] and edu["grant"]["predicate_columns"] == ["缴费月数"]
    assert fund["grant"]["privacy"]["budget"] == 2.0 and edu["grant"]["privacy"] is None
    assert edu["grant"]["max_elements"] == 500
    quotas = {q["window"]: q for q in edu["grant"]["quotas"]}
    assert quotas["month"]["limit"] == 77 and quotas["day"]["limit"] is None
    # on the wire: nothing of the other partner's grant reaches either
    with fx.channel_as(offered, "fund") as ch:
        raw = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
    wire = raw.SerializeToString()
    assert b"graduate-housing-support" not in wire and "缴费月数".encode() not in wire
    (mine,) = raw.datasets
    assert [p.code for p in mine.grant.purposes] == [fx.PURPOSE]
    assert [q.limit for q in mine.grant.quotas if q.HasField("limit")] == [1000, 5000]
    with fx.channel_as(offered, "edu") as ch:
        wire = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10).SerializeToString()
    assert fx.PURPOSE.encode() not in wire and "常公积金".encode() not in wire


def test_quota_and_budget_left_change_after_queries(offered, tmp_path):
    before = listing(offered, "fund")[0]["grant"]
    day = {q["window"]: q for q in before["quotas"]}
    fx.query(offered, tmp_path / "m.csv", check=True)
    offered.fed.cli("query", "cardinality", "--config", offered.cfg("fund"), "--partner", "hrss",
                    "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                    "--input", str(offered.applicants_csv), "--id-column", "身份证号")
    after = listing(offered, "fund")[0]["grant"]
    quotas = {q["window"]: q for q in after["quotas"]}
    asked = len(offered.applicants)
    assert quotas["day"]["used"] >= day["day"]["used"] + 2 * asked  # the cardinality padding counts too
    assert quotas["day"]["left"] == 1000 - quotas["day"]["used"]
    assert quotas["epoch"]["left"] == 5000 - quotas["epoch"]["used"]
    assert after["privacy"]["spent"] == pytest.approx(before["privacy"]["spent"] + 0.5)
    assert after["privacy"]["left"] == pytest.approx(2.0 - after["privacy"]["spent"])
    # the other partner's use is its own
    edu = {q["window"]: q for q in listing(offered, "edu")[0]["grant"]["quotas"]}
    assert edu["month"]["used"] == 0 and edu["month"]["left"] == 77
    text = offered.fed.cli("query", "datasets", "--config", offered.cfg("fund")).stdout
    assert f"day {quotas['day']['used']} of 1000 used" in text
    assert "epsilon 0.5 per query, 0.5 spent this key epoch of 2, 1.5 left" in text


def test_the_admin_api_shows_the_same(offered):
    offered.fed.start("fund")
    base = f"https://127.0.0.1:{offered.fed.nodes['fund'].http_port}"
    tls = ssl.create_default_context(cafile=str(offered.fed.pki / "ca.pem"))
    with httpx.Client(base_url=base, verify=tls) as client:
        auth = {"Authorization": f"Bearer {offered.admin_token}"}
        assert client.get("/v1/admin/partners/hrss/datasets").status_code == 401
        r = client.get("/v1/admin/partners/hrss/datasets", headers=auth, timeout=30)
        assert r.status_code == 200, r.text
        assert r.json() == listing(offered, "fund")
        assert client.get("/v1/admin/partners/nobody/datasets", headers=auth).status_code == 404
