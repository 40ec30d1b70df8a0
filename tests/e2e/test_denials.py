"""Refusals between real nodes: each with the right gRPC status, a clear reason, a log entry.

A raw gRPC client with hand-picked certificates plays a misbehaving or unknown peer.
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
import uuid

import grpc
import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc

from adapters import IdType, encode, synthetic_resident_id
from node.keys.pki import init_ca, issue_node_cert, target_name
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from protocols import oprf

from . import fixtures as fx
from .fixtures import blinded, channel_as, evaluate, header, hrss_log, refusal

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def scenario(tmp_path_factory):
    s = fx.build(tmp_path_factory.mktemp("denials"), registry_size=500, applicants=100,
                 grpc={"max_message_bytes": 1 << 20, "max_batch_elements": 1024})
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def test_a_well_formed_query_is_answered(scenario):
    msgs = [header(scenario), pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(3))),
            pb.EvaluateRequest(finish=pb.Finish())]
    replies = evaluate(scenario, msgs)
    assert [r.WhichOneof("body") for r in replies] == ["accepted", "batch", "summary"]
    assert replies[2].summary.elements_evaluated == 3


def test_certificate_from_another_ca_fails_the_handshake(scenario, tmp_path):
    init_ca(tmp_path / "rogue")
    with channel_as(scenario, "fund", ca_dir=tmp_path / "rogue") as ch:
        with pytest.raises(grpc.RpcError) as exc:
            pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.UNAVAILABLE


def test_known_ca_but_unlisted_node_is_permission_denied(scenario):
    with channel_as(scenario, "mallory") as ch:
        with pytest.raises(grpc.RpcError) as exc:
            pb_grpc.MembershipStub(ch).ListDatasets(pb.ListDatasetsRequest(), timeout=5)
    assert exc.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "'mallory' is not a partner" in exc.value.details()


def test_health_is_served_to_federation_members(scenario):
    with channel_as(scenario, "mallory") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(
            health_pb2.HealthCheckRequest(service="shuqiao.v1.Membership"), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_ungranted_purpose_is_refused_and_logged(scenario):
    qid = str(uuid.uuid4())
    err = refusal(scenario, [header(scenario, purpose="marketing", query_id=qid)])
    assert err.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "purpose 'marketing' is not granted" in err.details()
    (entry,) = [e for e in hrss_log(scenario) if e["query_id"] == qid]
    assert entry["outcome"] == "refused" and "not granted" in entry["reason"]


def test_ungranted_and_absent_datasets_look_the_same(scenario):
    a = refusal(scenario, [header(scenario, dataset="ungranted")])
    b = refusal(scenario, [header(scenario, dataset="no_such_dataset")])
    assert a.code() == b.code() == grpc.StatusCode.NOT_FOUND
    assert a.details().replace("ungranted", "X") == b.details().replace("no_such_dataset", "X")


@pytest.mark.parametrize("bad", [b"\x00" * 32, b"\xff" * 32, bytes(range(32))],
                         ids=["identity", "non-canonical", "not-a-point"])
def test_invalid_group_elements_are_rejected(scenario, bad):
    msgs = [header(scenario, total=2),
            pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(1) + bad))]
    err = refusal(scenario, msgs)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "invalid group element" in err.details()


@pytest.mark.parametrize("case", ["no-header", "bad-seq", "ragged", "over-total", "short", "too-big-batch"])
def test_malformed_streams_are_rejected(scenario, case):
    batch = lambda seq, el: pb.EvaluateRequest(batch=pb.ElementBatch(seq=seq, elements=el))
    finish = pb.EvaluateRequest(finish=pb.Finish())
    msgs = {
        "no-header": [batch(0, blinded(1))],
        "bad-seq": [header(scenario), batch(1, blinded(3))],
        "ragged": [header(scenario), batch(0, blinded(3)[:-1])],
        "over-total": [header(scenario, total=2), batch(0, blinded(3))],
        "short": [header(scenario, total=3), batch(0, blinded(2)), finish],
        "too-big-batch": [header(scenario, total=1025), batch(0, blinded(1025))],
    }[case]
    assert refusal(scenario, msgs).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_oversized_message_is_rejected_before_work(scenario):
    msgs = [header(scenario, total=40000),
            pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=os.urandom(32 * 40000)))]
    assert refusal(scenario, msgs).code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_replayed_query_id_is_refused(scenario):
    qid = str(uuid.uuid4())
    ok = [header(scenario, total=1, query_id=qid),
          pb.EvaluateRequest(batch=pb.ElementBatch(seq=0, elements=blinded(1))),
          pb.EvaluateRequest(finish=pb.Finish())]
    evaluate(scenario, ok)
    err = refusal(scenario, ok)
    assert err.code() == grpc.StatusCode.ALREADY_EXISTS
    assert sum(e["query_id"] == qid for e in hrss_log(scenario)) == 1


def test_stale_epoch_or_version_is_a_failed_precondition(scenario):
    err = refusal(scenario, [header(scenario, version=99)])
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "sync the current version" in err.details()


def test_unreachable_partner_is_a_clear_error(scenario, tmp_path):
    fed = scenario.fed
    fed.set_partner_address("fund", "hrss", "127.0.0.1:9")
    try:
        r = fx.query(scenario, tmp_path / "out.csv")
    finally:
        fed.set_partner_address("fund", "hrss", fed.nodes["hrss"].address)
    assert r.returncode == 1
    assert "partner 'hrss': unreachable at 127.0.0.1:9" in r.stderr
    assert not (tmp_path / "out.csv").exists()


def test_partner_dying_mid_query_fails_cleanly(scenario, tmp_path):
    rng = random.Random(3)
    src = tmp_path / "many.csv"
    fx.write_csv(src, ["身份证号"], ([synthetic_resident_id(rng)] for _ in range(120_000)))
    out = tmp_path / "many-result.csv"
    cmd = [sys.executable, "-m", "node", "query", "membership", "--config", scenario.cfg("fund"),
           "--partner", "hrss", "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
           "--input", str(src), "--id-column", "身份证号", "--out", str(out)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # Kill the answering node once it is evaluating (its log shows no completion yet).
        time.sleep(4.0)
        assert proc.poll() is None, "the query finished before the partner could be killed"
        scenario.fed.stop("hrss", kill=True)
        _, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
        scenario.fed.start("hrss")
        scenario.fed.set_partner_address("fund", "hrss", scenario.fed.nodes["hrss"].address)
    assert proc.returncode == 1
    assert "partner 'hrss'" in stderr and "nothing was written" in stderr
    assert not out.exists()
    # the node restarts and answers again
    assert fx.query(scenario, tmp_path / "after.csv").returncode == 0


def test_free_text_in_names_is_neither_echoed_nor_logged(scenario):
    qid = str(uuid.uuid4())
    secretish = "110101199003071234"
    err = refusal(scenario, [header(scenario, purpose=f"check {secretish}", query_id=qid)])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert secretish not in err.details()
    (entry,) = [e for e in hrss_log(scenario) if e["query_id"] == qid]
    assert secretish not in repr(entry)
    log_text = (scenario.fed.nodes["hrss"].directory / "serve.log").read_text()
    assert secretish not in log_text
