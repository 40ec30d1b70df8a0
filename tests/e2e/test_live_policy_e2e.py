"""A policy edit takes effect on a running node with `shuqiao reload` or SIGHUP, visibly:
ledgered, enforced on the wire, shown by `dataset show` and the admin API; an invalid or
restart-only edit is refused with its reason and the node keeps its policy."""
from __future__ import annotations

import os
import signal
import ssl
import time
import tomllib
import uuid

import grpc
import httpx
import pytest
import sqlalchemy as sa
import tomli_w

from node.core.config import load_config
from node.ledger import decode
from node.ledger.http import new_token
from node.rpc.shuqiao.v1 import membership_pb2 as pb
from node.rpc.shuqiao.v1 import membership_pb2_grpc as pb_grpc
from node.runtime.admin_log import policy_digest
from node.storage.schema import write_private

from . import fixtures as fx

pytestmark = pytest.mark.e2e

GRANT = {"kinds": ["membership", "cardinality"], "min_counting_elements": 10}


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    root = tmp_path_factory.mktemp("live")
    s = fx.build(root, registry_size=300, applicants=40)
    admin_token, admin_digest = new_token()
    s.fed.add_node("hrss", partners=[{"id": "fund"}], extra={
        "http": {"listen": "127.0.0.1:0", "admin_tokens": [admin_digest]}}, datasets=[{
            "name": "flexible_workers",
            "grants": [{"partner": "fund", "purposes": [fx.PURPOSE], **GRANT}]}])
    s.admin_token = admin_token
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def edit_hrss(s, change) -> dict:
    path = s.fed.nodes["hrss"].config_path
    config = tomllib.loads(path.read_text())
    change(config)
    write_private(path, tomli_w.dumps(config).encode())
    return config


def set_kinds(s, kinds):
    def change(config):
        config["datasets"][0]["grants"] = [{"partner": "fund", "purposes": [fx.PURPOSE], **GRANT,
                                            "kinds": kinds}]
    edit_hrss(s, change)


def cli_cardinality(s, check=False):
    return s.fed.cli("query", "cardinality", "--config", s.cfg("fund"), "--partner", "hrss",
                     "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                     "--input", str(s.applicants_csv), "--id-column", "身份证号", check=check)


def raw_cardinality_header(s) -> grpc.RpcError | None:
    """A cardinality header over the raw wire, as the fund centre; the refusal, or None."""
    d = fx.info(s)
    header = pb.CardinalityRequest(header=pb.QueryHeader(
        query_id=str(uuid.uuid4()), dataset="flexible_workers", version=d.version, epoch=d.epoch,
        purpose=fx.PURPOSE, total_elements=20, kind=pb.QUERY_KIND_CARDINALITY))
    with fx.channel_as(s, "fund") as ch:
        try:
            responses = pb_grpc.MembershipStub(ch).Cardinality(iter([header]), timeout=20)
            next(responses)  # Accepted: admitted under the grant in force
            responses.cancel()
            return None
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED:
                return None
            return exc


def policy_entries(s) -> list[dict]:
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes['hrss'].directory / 'node.db'}")
    with engine.connect() as conn:
        blobs = conn.execute(sa.text("SELECT entry FROM ledger_entries WHERE type = 'admin' "
                                     "ORDER BY idx")).scalars().all()
    engine.dispose()
    entries = [decode(b) for b in blobs]
    return [dict(e.details) for e in entries if e.action == "policy_changed"]


def show(s):
    return s.fed.cli("dataset", "show", "--config", s.cfg("hrss"), "flexible_workers")


def admin_get(s, path):
    base = f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}"
    tls = ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem"))
    with httpx.Client(base_url=base, verify=tls) as client:
        return client.get(path, headers={"Authorization": f"Bearer {s.admin_token}"})


def wait_status(s, after: str | None, timeout=30.0) -> dict:
    import json
    path = s.fed.nodes["hrss"].directory / "reload.status"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            status = json.loads(path.read_text())
            if status["at"] != after:
                return status
        time.sleep(0.1)
    raise AssertionError("the node wrote no reload status")


def last_status_time(s) -> str | None:
    import json
    path = s.fed.nodes["hrss"].directory / "reload.status"
    return json.loads(path.read_text())["at"] if path.exists() else None


def test_removing_a_kind_takes_effect_on_reload_and_is_ledgered(live):
    assert cli_cardinality(live).returncode == 0
    assert raw_cardinality_header(live) is None
    set_kinds(live, ["membership"])
    # edited but not reloaded: still enforced, and `dataset show` says the file is not
    before = show(live)
    assert "differs from the policy the running node enforces" in before.stderr
    assert "kinds membership, cardinality" in before.stdout
    assert admin_get(live, "/v1/admin/config").json()["file_differs"] is True
    assert raw_cardinality_header(live) is None

    r = live.fed.cli("reload", "--config", live.cfg("hrss"), check=False)
    assert r.returncode == 0, r.stderr
    assert "applied" in r.stdout
    refused = raw_cardinality_header(live)
    assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "query kind 'cardinality' is not granted" in refused.details()
    client = cli_cardinality(live)
    assert client.returncode == 1 and "not granted" in client.stderr
    digest = policy_digest(load_config(live.cfg("hrss")))
    last = policy_entries(live)[-1]
    assert last["digest"] == digest and last["trigger"] == "reload" and "datasets" in last["changed"]
    after = show(live)
    assert "warning" not in after.stderr and "kinds membership;" in after.stdout
    assert f"policy {digest[:12]}: enforced by the running node" in after.stdout
    status = admin_get(live, "/v1/admin/config").json()
    assert status["file_differs"] is False and status["enforced_policy_digest"] == digest
    (policy,) = admin_get(live, "/v1/admin/policy").json()
    assert policy["grants"][0]["kinds"] == ["membership"]


def test_an_invalid_edit_is_refused_and_the_old_policy_stays(live, tmp_path):
    set_kinds(live, ["membership"])
    live.fed.cli("reload", "--config", live.cfg("hrss"))
    ledgered = len(policy_entries(live))

    def invalid(config):
        grant = config["datasets"][0]["grants"][0]
        grant["kinds"], grant["min_elements"], grant["max_elements"] = ["membership", "cardinality"], 50, 5
    edit_hrss(live, invalid)
    r = live.fed.cli("reload", "--config", live.cfg("hrss"), check=False)
    assert r.returncode != 0
    assert "min_elements must not exceed max_elements" in r.stderr and "keeps the config" in r.stderr
    # the node itself refuses it too, on a bare SIGHUP, and says why in its log and status
    previous = last_status_time(live)
    os.kill(live.fed.nodes["hrss"].process.pid, signal.SIGHUP)
    status = wait_status(live, previous)
    assert status["ok"] is False and status["nonce"] == ""
    assert "min_elements must not exceed max_elements" in status["message"]
    log = (live.fed.nodes["hrss"].directory / "serve.log").read_text()
    assert "config reload (sighup)" in log and "min_elements must not exceed max_elements" in log
    # still answering, under the old policy: membership yes, cardinality no
    assert fx.query(live, tmp_path / "out.csv").returncode == 0
    refused = raw_cardinality_header(live)
    assert refused is not None and refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert len(policy_entries(live)) == ledgered
    # commands beside the node read the file and refuse it with the same reason
    shown = live.fed.cli("dataset", "show", "--config", live.cfg("hrss"), "flexible_workers", check=False)
    assert shown.returncode == 2 and "min_elements must not exceed max_elements" in shown.stderr


def test_sighup_applies_an_edit(live):
    set_kinds(live, ["membership"])
    live.fed.cli("reload", "--config", live.cfg("hrss"))
    assert raw_cardinality_header(live) is not None
    set_kinds(live, ["membership", "cardinality"])
    previous = last_status_time(live)
    os.kill(live.fed.nodes["hrss"].process.pid, signal.SIGHUP)
    status = wait_status(live, previous)
    assert status["ok"] is True and status["outcome"] == "applied"
    assert raw_cardinality_header(live) is None
    assert cli_cardinality(live).returncode == 0
    assert policy_entries(live)[-1]["trigger"] == "sighup"
    assert "config reload (sighup): applied" in (live.fed.nodes["hrss"].directory / "serve.log").read_text()


def test_a_restart_only_change_is_refused_by_name(live):
    set_kinds(live, ["membership", "cardinality"])
    live.fed.cli("reload", "--config", live.cfg("hrss"))

    def move(config):
        config["grpc"]["listen"] = "127.0.0.1:1"
        config["datasets"][0]["grants"][0]["kinds"] = ["membership"]
    edit_hrss(live, move)
    r = live.fed.cli("reload", "--config", live.cfg("hrss"), check=False)
    assert r.returncode == 1
    assert "grpc.listen changed, which takes a restart" in r.stderr
    assert raw_cardinality_header(live) is None  # nothing of the edit was applied

    def back(config):
        config["grpc"]["listen"] = "127.0.0.1:0"
    edit_hrss(live, back)
    assert live.fed.cli("reload", "--config", live.cfg("hrss"), check=False).returncode == 0
    assert raw_cardinality_header(live) is not None
    ledgered = len(policy_entries(live))
    again = live.fed.cli("reload", "--config", live.cfg("hrss"))
    assert "holds the config in force" in again.stdout and len(policy_entries(live)) == ledgered


def test_reload_without_a_running_node_says_so(tmp_path):
    s = fx.build(tmp_path, registry_size=10, applicants=4)
    r = s.fed.cli("reload", "--config", s.cfg("hrss"), check=False)
    assert r.returncode == 1 and "no node is serving" in r.stderr
