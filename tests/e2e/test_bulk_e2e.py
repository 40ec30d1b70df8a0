"""End to end: the bulk kind between real `shuqiao serve` processes over mutual TLS.

One agency (hrss, 5,000 registered people) grants the dataset to several partners, one
per policy: the fund centre's node (membership and bulk), a partner without bulk, one
with a small daily quota, one with attacks to run. The fund centre asks through the
CLI; every other partner speaks the raw wire, driving protocols/bulk's receiver (never
the node's asking client) and rewriting its messages the way an overreaching fund
centre would. Results are compared with the plain intersection, charges with the bins
that follow from the declared size.
"""
from __future__ import annotations

import csv
import queue
import random
import uuid

import grpc
import pytest

from node.devtools.synthetic import write_csv
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from protocols.bulk import BulkReceiver, messages
from protocols.bulk.params import bin_count

from . import adversary as adv
from . import fixtures as fx

pytestmark = pytest.mark.e2e

ASKED = 2000      # the fund centre's list: half registered
SMALL = 600       # the raw-wire partners' sets
GRANTS = {
    "fund": {"kinds": ["membership", "bulk"], "max_elements": 5000, "bulk_trusts_partner_software": True},
    "nobulk": {"kinds": ["membership"]},
    "tight": {"kinds": ["bulk"], "daily_elements": bin_count(SMALL) + 10,
              "bulk_trusts_partner_software": True},
    "probe": {"kinds": ["bulk"], "max_elements": 1000, "bulk_trusts_partner_software": True},
}


@pytest.fixture(scope="module")
def agency(tmp_path_factory):
    root = tmp_path_factory.mktemp("bulk")
    s = adv.federation(root, GRANTS, registry_size=5000)
    rng = random.Random(3)
    outsiders = fx.people(random.Random(99), ASKED // 2)
    s.applicants = rng.sample(s.registry, ASKED // 2) + [p for p in outsiders if p not in s.registry]
    rng.shuffle(s.applicants)
    write_csv(s.applicants_csv, ["申请编号", "身份证号"],
              ((f"A{i:05d}", p) for i, p in enumerate(s.applicants)))
    yield s
    s.fed.close()


def ask(s, out, kind: str):
    return s.fed.cli("query", "membership", "--config", s.cfg("fund"), "--partner", "hrss",
                     "--dataset", adv.DATASET, "--purpose", fx.PURPOSE, "--input",
                     str(s.applicants_csv), "--id-column", "身份证号", "--out", str(out),
                     "--kind", kind)


def read_rows(path) -> list[dict]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return list(csv.DictReader(f))


# -- a raw-wire fund centre ---------------------------------------------------------------

def people_elements(s, n: int, registered: int) -> list[bytes]:
    inside = [adv.element(s, p) for p in s.registry[:registered]]
    return inside + [b"shuqiao/id/v1/custom/outsider/%d" % i for i in range(n - registered)]


def bulk_call(s, partner: str, elements: list[bytes], *, n1: int | None = None,
              query_id: str | None = None, hello=lambda m: m, after_setup=lambda ms: ms,
              half_close_after: int | None = None, chunk_rows: int = 256):
    """One Bulk stream driven by protocols/bulk's receiver; (responses, RpcError or None,
    receiver). `hello` rewrites the Hello, `after_setup` the list of messages the Setup
    draws (hashing key, then correction chunks); with `half_close_after`, the client
    ends its stream after that many of them."""
    d = adv.dataset_info(s, partner)
    receiver = BulkReceiver(elements, chunk_rows=chunk_rows)
    start = receiver.start()
    first = next(start)
    list(start)
    outbox: queue.Queue = queue.Queue()
    outbox.put(pb.BulkRequest(header=pb.QueryHeader(
        query_id=query_id or str(uuid.uuid4()), dataset=adv.DATASET, version=d.version,
        epoch=d.epoch, purpose=fx.PURPOSE, total_elements=len(elements) if n1 is None else n1,
        kind=pb.QUERY_KIND_BULK)))
    outbox.put(pb.BulkRequest(message=hello(first)))

    def requests():
        while (m := outbox.get()) is not None:
            yield m

    got = []
    with fx.channel_as(s, partner) as ch:
        try:
            for r in pb_grpc.MembershipStub(ch).Bulk(requests(), timeout=60):
                got.append(r)
                if r.WhichOneof("body") == "message" and r.message[1] == messages.SETUP:
                    sent = after_setup(list(receiver.handle(r.message)))
                    for m in sent[:half_close_after]:
                        outbox.put(pb.BulkRequest(message=m))
                    outbox.put(None)
                elif r.WhichOneof("body") == "message":
                    list(receiver.handle(r.message))
        except grpc.RpcError as exc:
            return got, exc, receiver
        finally:
            outbox.put(None)
    return got, None, receiver


def row_of(s, query_id: str) -> dict:
    (row,) = [r for r in adv.answerer_log(s) if r["query_id"] == query_id]
    return row


def query_id_of(got) -> str:
    return next(r.accepted.query_id for r in got if r.WhichOneof("body") == "accepted")


# -- the fund centre's node -----------------------------------------------------------------

def test_bulk_answers_the_plain_intersection_in_membership_result_files(agency, tmp_path):
    r = ask(agency, tmp_path / "bulk.csv", "bulk")
    rows = read_rows(tmp_path / "bulk.csv")
    registry = set(agency.registry)
    assert len(rows) == len(agency.applicants) == ASKED
    for row in rows:
        assert (row["结果"] == "是") == (row["身份证号"] in registry), row["行号"]
    assert f"{ASKED // 2} in hrss.{adv.DATASET} v1" in r.stdout and "hint" not in r.stdout
    ask(agency, tmp_path / "membership.csv", "membership")
    assert (tmp_path / "bulk.csv").read_bytes() == (tmp_path / "membership.csv").read_bytes()


def test_a_long_membership_query_suggests_bulk_when_granted(agency, tmp_path):
    """4,000 identifiers against 5,000 rows: bulk answers sooner (node/asker/bulk.py)."""
    long_list = tmp_path / "long.csv"
    people = agency.registry[:2000] + [p for p in fx.people(random.Random(5), 2100)
                                       if p not in set(agency.registry)][:2000]
    write_csv(long_list, ["申请编号", "身份证号"], ((f"L{i}", p) for i, p in enumerate(people)))
    r = agency.fed.cli("query", "membership", "--config", agency.cfg("fund"), "--partner", "hrss",
                       "--dataset", adv.DATASET, "--purpose", fx.PURPOSE, "--input", str(long_list),
                       "--id-column", "身份证号", "--out", str(tmp_path / "long-result.csv"))
    assert "2000 in hrss" in r.stdout
    assert "hint: for 4000 identifiers `--kind bulk` answers sooner; hrss grants it" in r.stdout


def test_both_ledgers_hold_the_bulk_query_charged_by_bins_with_a_verified_receipt(agency, tmp_path):
    ask(agency, tmp_path / "r.csv", "bulk")
    asked = [r for r in fx.query_log(agency, "fund") if r["kind"] == "bulk"][-1]
    answered = row_of(agency, asked["query_id"])
    for row in (asked, answered):
        assert row["outcome"] == "answered" and row["elements"] == bin_count(ASKED)
        assert row["purpose"] == fx.PURPOSE and row["version"] == 1
    assert asked["matched"] == ASKED // 2 and answered["matched"] is None
    assert asked["reason"] == ""  # the receipt verified against the fund centre's own entry
    check = agency.fed.cli("audit", "check", "--config", agency.cfg("hrss"), check=False)
    assert check.returncode == 0, check.stdout + check.stderr


def test_refused_when_the_grant_lacks_bulk(agency):
    got, err, _ = bulk_call(agency, "nobulk", people_elements(agency, SMALL, 10))
    assert err is not None and err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'bulk' is not granted" in err.details() and got == []


def test_quota_is_charged_by_bins_and_refuses_once_spent(agency):
    elements = people_elements(agency, SMALL, 100)
    got, err, receiver = bulk_call(agency, "tight", elements)
    assert err is None and receiver.finished and set(receiver.result().tolist()) == set(range(100))
    assert row_of(agency, query_id_of(got))["elements"] == bin_count(SMALL)
    got, err, _ = bulk_call(agency, "tight", elements)
    assert err is not None and err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "daily quota" in err.details() and got == []


# -- attacks over the raw wire ----------------------------------------------------------------

def _forged_hello(bins_delta: int = 0, size_delta: int = 0):
    def edit(m: bytes) -> bytes:
        h = messages.Hello.from_bytes(m)
        return messages.Hello(h.receiver_size + size_delta, h.bins + bins_delta, h.chunk_rows,
                              h.base_ot_point).to_bytes()
    return edit


@pytest.mark.parametrize("forge", [_forged_hello(bins_delta=128), _forged_hello(size_delta=-1),
                                   _forged_hello(size_delta=+1)])
def test_a_hello_whose_bins_do_not_follow_from_the_header_is_refused_uncharged(agency, forge):
    got, err, _ = bulk_call(agency, "probe", people_elements(agency, SMALL, 10), hello=forge)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert [r.WhichOneof("body") for r in got] == ["accepted"]  # no Setup left
    row = row_of(agency, query_id_of(got))
    assert row["outcome"] == "refused"  # a refusal charges nothing (node/policy/checks.py)


def test_a_header_above_the_grants_maximum_is_refused(agency):
    got, err, _ = bulk_call(agency, "probe", people_elements(agency, 1001, 10))
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 1000 elements" in err.details() and got == []


def test_messages_out_of_order_are_refused_and_charged(agency):
    swap = lambda ms: [ms[2], ms[1], ms[0], *ms[3:]]  # noqa: E731  (a correction before the key)
    got, err, _ = bulk_call(agency, "probe", people_elements(agency, SMALL, 10), after_setup=swap)
    assert err is not None and err.code() == grpc.StatusCode.INVALID_ARGUMENT
    row = row_of(agency, query_id_of(got))
    assert row["outcome"] == "broken_by_asker" and row["elements"] == bin_count(SMALL)


def test_a_stream_that_stops_mid_way_is_recorded_aborted_and_charged(agency):
    got, err, receiver = bulk_call(agency, "probe", people_elements(agency, SMALL, 10),
                                   half_close_after=2)  # the key and one correction chunk
    assert err is not None and err.code() == grpc.StatusCode.CANCELLED
    assert not receiver.finished
    row = row_of(agency, query_id_of(got))
    assert row["outcome"] == "aborted" and row["elements"] == bin_count(SMALL)


def test_a_query_id_runs_once(agency):
    elements = people_elements(agency, SMALL, 10)
    got, err, _ = bulk_call(agency, "probe", elements)
    assert err is None
    again, err, _ = bulk_call(agency, "probe", elements, query_id=query_id_of(got))
    assert err is not None and err.code() == grpc.StatusCode.ALREADY_EXISTS and again == []
    assert len([r for r in adv.answerer_log(agency) if r["query_id"] == query_id_of(got)]) == 1
