"""Retiring the newest version between real nodes: the node serves the newest active one.

The agency registers version 1, refreshes to version 2, starts a new key epoch, then
retires version 2 (say it was loaded from the wrong file). Partners must then be served version 1 -- listing,
syncing and querying it -- and, once version 1 is retired as well, get clear refusals:
the listing omits the dataset, a query is refused with FAILED_PRECONDITION and a reason,
and `dataset prepare` prints one line. No `UNKNOWN`, no traceback.
"""
from __future__ import annotations

import csv
import uuid

import grpc
import pytest

from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc

from . import fixtures as fx

pytestmark = pytest.mark.e2e

GRANT = {"kinds": ["membership", "predicate", "threshold"], "threshold_column": "缴费月数",
         "predicate_columns": ["缴费月数"], "min_elements": 1}


def _answers(path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {r["身份证号"]: r["结果"] for r in csv.DictReader(f)}


def _listing(s) -> list[pb.DatasetInfo]:
    with fx.channel_as(s, "fund") as ch:
        return list(pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10).datasets)


def test_retiring_the_newest_version_serves_the_previous_one_then_none(tmp_path):
    s = fx.build(tmp_path, registry_size=200, applicants=40, grant=GRANT)
    hrss = s.cfg("hrss")
    with s.fed:
        fx.start(s)
        fx.register(s)
        fx.query(s, tmp_path / "v1.csv", check=True)
        outsiders = [p for p in s.applicants if p not in set(s.registry)][:4]
        fx.write_csv(tmp_path / "add.csv", ["公民身份号码", "缴费月数"], [[p, 9] for p in outsiders])
        s.fed.cli("dataset", "update", "--config", hrss, "--name", "flexible_workers",
                  "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"))
        # A new key epoch is built for the current version only: version 1 has no table
        # under it, so serving version 1 again needs them built.
        s.fed.cli("dataset", "rotate-key", "--config", hrss, "--name", "flexible_workers")
        fx.query(s, tmp_path / "v2.csv", check=True)  # the fund centre now holds version 2
        fx.write_csv(tmp_path / "need.csv", ["身份证号", "required"], [[p, 6] for p in s.applicants])
        threshold = ("query", "threshold", "--config", s.cfg("fund"), "--partner", "hrss",
                     "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                     "--input", str(tmp_path / "need.csv"), "--id-column", "身份证号",
                     "--threshold-column", "required")
        s.fed.cli(*threshold, "--out", str(tmp_path / "t2.csv"))  # and its threshold table
        s.fed.cli("dataset", "retire", "--config", hrss, "flexible_workers", "--version", "2")

        (listed,) = _listing(s)
        assert (listed.version, listed.epoch) == (1, 2)
        r = fx.query(s, tmp_path / "back.csv")
        assert r.returncode == 0, r.stdout + r.stderr
        assert "Traceback" not in r.stderr
        r = s.fed.cli(*threshold, "--out", str(tmp_path / "t1.csv"), check=False)
        assert r.returncode == 0 and " v1: " in r.stdout, r.stdout + r.stderr
        r = s.fed.cli("dataset", "prepare", "--config", hrss, "--name", "flexible_workers",
                      check=False)
        assert r.returncode == 0 and "Traceback" not in r.stderr + r.stdout, r.stderr
        with fx.channel_as(s, "fund") as ch:  # a predicate table of version 1 can be prepared
            d = pb_grpc.MembershipStub(ch).PrepareTable(pb.PrepareTableRequest(
                dataset="flexible_workers", predicate="缴费月数 >= 6"), timeout=30)
        assert d.version == 1 and d.row_count > 0

        s.fed.cli("dataset", "retire", "--config", hrss, "flexible_workers", "--version", "1")
        assert _listing(s) == []
        h = pb.QueryHeader(query_id=str(uuid.uuid4()), dataset="flexible_workers", version=1,
                           epoch=listed.epoch, purpose=fx.PURPOSE, total_elements=3,
                           kind=pb.QUERY_KIND_MEMBERSHIP)
        err = fx.refusal(s, [pb.EvaluateRequest(header=h)])
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION, err
        assert "flexible_workers" in err.details()
        with fx.channel_as(s, "fund") as ch, pytest.raises(grpc.RpcError) as exc:
            pb_grpc.MembershipStub(ch).PrepareTable(pb.PrepareTableRequest(
                dataset="flexible_workers", predicate="缴费月数 >= 6"), timeout=30)
        assert exc.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "no active version" in exc.value.details()
        r = fx.query(s, tmp_path / "none.csv")  # the honest asker: one clear line
        said = (r.stderr + r.stdout).strip()
        assert r.returncode != 0 and len(said.splitlines()) == 1, said
        assert "offers no dataset 'flexible_workers'" in said
        r = s.fed.cli(*threshold, "--out", str(tmp_path / "t0.csv"), check=False)
        said = (r.stderr + r.stdout).strip()
        assert r.returncode != 0 and len(said.splitlines()) == 1, said
        r = s.fed.cli("dataset", "prepare", "--config", hrss, "--name", "flexible_workers",
                      check=False)
        said = (r.stderr + r.stdout).strip()
        assert r.returncode != 0 and "Traceback" not in said and len(said.splitlines()) == 1, said
        assert "no active version" in said
    v1, back = _answers(tmp_path / "v1.csv"), _answers(tmp_path / "back.csv")
    assert back == v1  # version 1's answers again: the additions of version 2 are gone
    assert all(_answers(tmp_path / "v2.csv")[p] == "是" for p in outsiders)
