"""Aggregate and threshold queries between real nodes, against the plain computation.

One federation for the module (real `shuqiao serve` processes, mutual TLS): the HRSS
node offers the same registry as three datasets under different grants (exact
aggregates + threshold; noised aggregates with a budget; membership only). The CLI
runs each kind once; the other cases call the asker in-process against the same
running partner. Paillier keys are the production 3072 bits (key generation takes
well under a second with gmpy2).
"""
from __future__ import annotations

import csv
import random
import uuid

import grpc
import pytest
import tenseal  # noqa: F401  (before grpc_tools, which test_generated_rpc loads: the reverse aborts)

from adapters import IdType, encode
from node.asker.statistics import aggregate, threshold
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.core.errors import PartnerError
from node.devtools.localnet import Federation
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.rpc.shuqiao.v1 import statistics_pb2 as spb
from node.rpc.shuqiao.v1 import statistics_pb2_grpc as spb_grpc
from node.devtools.synthetic import write_csv
from protocols import oprf
from protocols import threshold as th

from . import fixtures as fx

pytestmark = pytest.mark.e2e

PURPOSE = fx.PURPOSE
BIG, SMALL = ("天宁区", "钟楼区"), "金坛区"
COLUMNS = ["contribution_base", "district", "monthly_income", "note"]


def _registry(rng: random.Random, people: list[str]) -> list[dict]:
    rows = []
    for i, p in enumerate(people):
        base = str(rng.randint(2_500, 40_000))
        if i % 37 == 5:
            base = rng.choice(["n/a", "1,200", "-5", "3.5"])  # unusable: left out, counted
        income = "" if i % 41 == 7 else str(rng.randint(2_000, 30_000))
        district = SMALL if i % 25 == 0 else BIG[i % 2]
        rows.append({"id": p, "contribution_base": base, "district": district,
                     "monthly_income": income, "note": "x"})
    return rows


@pytest.fixture(scope="module")
def net(tmp_path_factory):
    root = tmp_path_factory.mktemp("stats")
    rng = random.Random(5)
    pop = fx.people(rng, 700)
    registry, outsiders = pop[:600], pop[600:]
    rows = _registry(rng, registry)
    write_csv(root / "registry.csv", ["公民身份号码", *COLUMNS],
              ([r["id"], *(r[c] for c in COLUMNS)] for r in rows))
    grant = {"partner": "fund", "purposes": [PURPOSE], "min_elements": 10,
             "aggregate_columns": ["contribution_base", "district"], "min_group_size": 10}
    fed = Federation(root / "fed")
    fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[
        {"name": "flexible_workers", "grants": [{**grant, "kinds": ["aggregate", "threshold"],
                                                 "threshold_column": "monthly_income"}]},
        {"name": "workers_dp", "grants": [{**grant, "kinds": ["aggregate"], "dp_epsilon": 1.0,
                                           "dp_budget": 2.5, "aggregate_value_bound": 40_000}]},
        {"name": "workers_plain", "grants": [{**grant, "kinds": ["membership"]}]}])
    fed.add_node("fund", partners=[{"id": "hrss"}])
    with fed:
        for name in ("flexible_workers", "workers_dp", "workers_plain"):
            fed.cli("dataset", "add", "--config", str(fed.nodes["hrss"].config_path), "--name", name,
                    "--csv", str(root / "registry.csv"), "--id-column", "公民身份号码",
                    *(a for c in COLUMNS for a in ("--attribute", c)))
        fed.start("hrss")
        fed.set_partner_address("fund", "hrss", fed.nodes["hrss"].address)
        ctx = NodeContext(load_config(fed.nodes["fund"].config_path))
        try:
            yield {"fed": fed, "root": root, "rows": rows, "outsiders": outsiders, "ctx": ctx,
                   "rng": rng}
        finally:
            ctx.close()


def _ids(people) -> list[bytes]:
    return [encode(IdType.CN_RESIDENT_ID, p) for p in people]


def _depositors(net) -> tuple[list[dict], list[str]]:
    """150 registry members (exactly 3 of the small district) and 50 outsiders."""
    rows = net["rows"]
    small = [r for r in rows if r["district"] == SMALL][:3]
    big = [r for r in rows if r["district"] != SMALL][:147]
    return small + big, net["outsiders"][:50]


def _plain(members: list[dict]) -> dict[str, tuple[int, int]]:
    out: dict[str, list[int]] = {}
    for r in members:
        v = r["contribution_base"]
        if v.isdigit():
            out.setdefault(r["district"], []).append(int(v))
    return {d: (len(vs), sum(vs)) for d, vs in out.items()}


def _cfg(net, node: str) -> str:
    return str(net["fed"].nodes[node].config_path)


def test_exact_grouped_aggregate_from_the_cli(net, tmp_path):
    members, outsiders = _depositors(net)
    path = tmp_path / "depositors.csv"
    write_csv(path, ["账号", "身份证号"], [(f"D{i}", p) for i, p in enumerate(
        [r["id"] for r in members] + outsiders + ["110101199003071234"])])
    out = tmp_path / "result.csv"
    r = net["fed"].cli("query", "aggregate", "--config", _cfg(net, "fund"), "--partner", "hrss",
                       "--dataset", "flexible_workers", "--purpose", PURPOSE, "--input", str(path),
                       "--id-column", "身份证号", "--value", "contribution_base",
                       "--op", "sum", "--op", "mean", "--op", "count", "--group-by", "district",
                       "--out", str(out),
                       check=False)
    assert r.returncode == 0, r.stderr
    assert "exact" in r.stdout and f"groups under 10 suppressed: {SMALL}" in r.stdout
    assert "1 invalid rows not asked" in r.stdout
    got = {row["district"]: row for row in csv.DictReader(open(out, encoding="utf-8-sig"))}
    plain = _plain(members)
    assert set(got) == {*BIG, SMALL}
    assert got[SMALL]["已抑制"] == "是" and got[SMALL]["合计"] == ""
    for d in BIG:
        count, total = plain[d]
        assert (int(got[d]["人数"]), int(got[d]["合计"])) == (count, total)
        assert float(got[d]["平均值"]) == pytest.approx(total / count)
        assert got[d]["人数噪声上限(±)"] == got[d]["合计噪声上限(±)"] == "0"  # exact figures
    unusable = sum(not r["contribution_base"].isdigit() for r in net["rows"])
    assert f"{600 - unusable} of its rows take part, {unusable} without a usable value" in r.stdout
    rejected = list(csv.reader(open(out.with_suffix(".rejected.csv"), encoding="utf-8-sig")))
    assert [row[0] for row in rejected[1:]] == ["202"]  # header is line 1; 201st data row


def test_count_only_over_every_row_and_exact_counts_for_the_agency(net):
    members, outsiders = _depositors(net)
    r = aggregate(net["ctx"], "hrss", "flexible_workers", PURPOSE,
                  _ids([m["id"] for m in members] + outsiders), ops=["count"],
                  count_epsilon=None)
    assert set(r.groups) == {""} and r.groups[""].count == len(members)
    assert r.groups[""].total is None and r.unusable_rows == 0 and r.epsilon == 0


def test_noised_aggregates_stay_within_the_bound_until_the_budget_is_spent(net):
    members, outsiders = _depositors(net)
    ids = _ids([m["id"] for m in members] + outsiders)
    plain = _plain(members)
    for _ in range(2):
        r = aggregate(net["ctx"], "hrss", "workers_dp", PURPOSE, ids, value="contribution_base",
                      ops=["sum", "count"], group_by="district")
        assert r.epsilon == pytest.approx(1.0) and r.count_noise_bound > 0
        assert r.sum_noise_bound > 0 and r.min_group_size == 10
        for d in BIG:
            count, total = plain[d]
            assert abs(r.groups[d].count - count) <= r.count_noise_bound
            assert abs(r.groups[d].total - total) <= r.sum_noise_bound
    with pytest.raises(PartnerError) as exc:
        aggregate(net["ctx"], "hrss", "workers_dp", PURPOSE, ids, value="contribution_base",
                  ops=["sum"], group_by="district")
    assert exc.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "budget of 2.5" in str(exc.value) and "(2 used" in str(exc.value)
    log = fx.hrss_log(_Scenario(net))
    spent = [e["epsilon_micro"] for e in log if e["dataset"] == "workers_dp"]
    assert spent == [1_000_000, 1_000_000, 0]


def test_threshold_answers_equal_the_plain_comparison_from_the_cli(net, tmp_path):
    rng = random.Random(9)
    rows = net["rows"][:60]
    applicants = []
    for i, r in enumerate(rows):
        income = int(r["monthly_income"]) if r["monthly_income"] else 5_000
        applicants.append((f"A{i}", r["id"], str(income + (0, 1, -1, 2_000, -2_000)[i % 5])))
    applicants += [(f"X{i}", p, "4000") for i, p in enumerate(net["outsiders"][:10])]
    applicants.insert(7, ("BAD1", rows[0]["id"], "4,000"))
    applicants.insert(9, ("BAD2", "123", "4000"))
    rng.shuffle(applicants)
    path, out = tmp_path / "applicants.csv", tmp_path / "answers.csv"
    write_csv(path, ["申请编号", "身份证号", "required_income"], applicants)
    r = net["fed"].cli("query", "threshold", "--config", _cfg(net, "fund"), "--partner", "hrss",
                       "--dataset", "flexible_workers", "--purpose", PURPOSE, "--input", str(path),
                       "--id-column", "身份证号", "--threshold-column", "required_income",
                       "--out", str(out), check=False)
    assert r.returncode == 0, r.stderr
    incomes = {x["id"]: x["monthly_income"] for x in net["rows"]}
    answers = {row["申请编号"]: row for row in csv.DictReader(open(out, encoding="utf-8-sig"))}
    assert len(answers) == 72  # every row, the two not asked as 无效
    for ref, person, required in applicants:
        income = incomes.get(person, "")
        expected = ("无效" if ref.startswith("BAD") else "无登记收入" if not income
                    else "是" if int(income) >= int(required) else "否")
        assert answers[ref]["结果"] == expected, ref
    rejected = list(csv.DictReader(open(out.with_suffix(".rejected.csv"), encoding="utf-8-sig")))
    assert {int(row["行号"]) for row in rejected} == {
        i + 2 for i, a in enumerate(applicants) if a[0].startswith("BAD")}
    assert {row["申请编号"] for row in rejected} == {"BAD1", "BAD2"}
    assert "身份证号" not in rejected[0] and "123" not in out.with_suffix(".rejected.csv").read_text()
    # The partner's log: the applicants' count, never who or the thresholds.
    (entry,) = [e for e in fx.hrss_log(_Scenario(net))
                if e["kind"] == "threshold" and e["elements"] == 70]
    assert entry["elements"] == 70 and entry["outcome"] == "answered" and entry["matched"] is None


def test_threshold_table_is_synced_once_per_epoch(net):
    rows = net["rows"][:12]
    ids = _ids([r["id"] for r in rows])
    limits = [int(r["monthly_income"] or 0) for r in rows]
    r = threshold(net["ctx"], "hrss", "flexible_workers", PURPOSE, ids, limits)
    assert r.answers == [True if x["monthly_income"] else None for x in rows]
    cached = net["ctx"].config.data_dir / "statistics" / "threshold-hrss-flexible_workers.bin"
    assert cached.exists()
    stamp = cached.stat().st_mtime_ns
    threshold(net["ctx"], "hrss", "flexible_workers", PURPOSE, ids, [x + 1 for x in limits])
    assert cached.stat().st_mtime_ns == stamp  # the digest matched: nothing was sent again


def test_refusals_name_the_rule(net):
    ctx, ids = net["ctx"], _ids([r["id"] for r in net["rows"][:20]])
    cases = [
        (lambda: threshold(ctx, "hrss", "workers_dp", PURPOSE, ids, [1] * 20),
         grpc.StatusCode.PERMISSION_DENIED, "query kind 'threshold' is not granted"),
        (lambda: aggregate(ctx, "hrss", "workers_plain", PURPOSE, ids),
         grpc.StatusCode.PERMISSION_DENIED, "query kind 'aggregate' is not granted"),
        (lambda: aggregate(ctx, "hrss", "flexible_workers", PURPOSE, ids, value="note", ops=["sum"]),
         grpc.StatusCode.PERMISSION_DENIED, "column 'note' may not be used as an aggregate value"),
        (lambda: aggregate(ctx, "hrss", "flexible_workers", PURPOSE, ids, group_by="monthly_income"),
         grpc.StatusCode.PERMISSION_DENIED, "may not be used as a group-by column"),
        (lambda: aggregate(ctx, "hrss", "flexible_workers", "another-purpose", ids),
         grpc.StatusCode.PERMISSION_DENIED, "purpose 'another-purpose' is not granted"),
        (lambda: aggregate(ctx, "hrss", "flexible_workers", PURPOSE, ids[:5]),
         grpc.StatusCode.INVALID_ARGUMENT, "at least 10 elements"),
    ]
    for call, code, text in cases:
        with pytest.raises(PartnerError) as exc:
            call()
        assert exc.value.code == code and text in str(exc.value), str(exc.value)
    refused = [e for e in fx.hrss_log(_Scenario(net)) if e["outcome"] == "refused"
               and e["kind"] in ("aggregate", "threshold")]
    assert len(refused) >= len(cases)


def test_a_tampered_match_request_is_refused_with_invalid_argument(net):
    s = _Scenario(net)
    with fx.channel_as(s, "fund") as ch:
        listing = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
        info = next(d for d in listing.datasets if d.name == "flexible_workers")
        header = spb.StatisticsHeader(
            query_id=str(uuid.uuid4()), dataset="flexible_workers", version=info.version,
            epoch=info.epoch, purpose=PURPOSE, total_elements=10,
            kind=spb.STATISTICS_KIND_AGGREGATE)
        bogus = b"\x01" + (320).to_bytes(8, "big") + b"\xff" * 320  # 10 non-canonical elements
        msgs = [spb.AggregateRequest(header=header),
                spb.AggregateRequest(match_request=spb.StatisticsChunk(data=bogus, last=True))]
        with pytest.raises(grpc.RpcError) as exc:
            list(spb_grpc.StatisticsStub(ch).Aggregate(iter(msgs), timeout=30))
    assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "match request refused" in exc.value.details()


def test_a_stale_table_or_an_invalid_ciphertext_is_refused(net):
    s = _Scenario(net)
    with fx.channel_as(s, "fund") as ch:
        listing = pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=10)
        info = next(d for d in listing.datasets if d.name == "flexible_workers")
        stub = spb_grpc.StatisticsStub(ch)
        table = next(iter(stub.ThresholdTable(spb.ThresholdTableRequest(
            dataset="flexible_workers", held_digest=b"\0" * 32), timeout=30))).info
        width = 2 * len(table.modulus)

        def ask(key_id: bytes, ciphertexts: bytes) -> grpc.RpcError:
            header = spb.StatisticsHeader(
                query_id=str(uuid.uuid4()), dataset="flexible_workers", version=info.version,
                epoch=info.epoch, purpose=PURPOSE, total_elements=10,
                kind=spb.STATISTICS_KIND_THRESHOLD, key_id=key_id, table_digest=table.digest)
            blinded = oprf.blind([b"x%d" % i for i in range(10)])[1]
            comparison = th.ThresholdRequest(table.key_id, ciphertexts).to_bytes()
            msgs = [spb.ThresholdRequest(header=header),
                    spb.ThresholdRequest(batch=spb.StatisticsBatch(seq=0, elements=blinded)),
                    spb.ThresholdRequest(comparison=spb.StatisticsChunk(data=comparison, last=True))]
            with pytest.raises(grpc.RpcError) as exc:
                list(stub.Threshold(iter(msgs), timeout=30))
            return exc.value

        stale = ask(b"\1" * 16, b"")
        assert stale.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "sync it again" in stale.details()
        bad = ask(table.key_id, b"\0" * width * 10)  # 0 is not a Paillier ciphertext
        assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "comparison refused: invalid Paillier ciphertext (entry 0)" in bad.details()


class _Scenario:
    """What fixtures.hrss_log and fixtures.channel_as read from a scenario."""

    def __init__(self, net) -> None:
        self.fed = net["fed"]
