"""The auditor: verify over an export, HTTP and gRPC; forks, rollbacks and key changes."""
from __future__ import annotations

import threading
import time
from concurrent import futures
from contextlib import contextmanager

import grpc
import httpx
import pytest
import uvicorn

from node.ledger import Ledger
from node.ledger.audit import KnownHeads, verify
from node.ledger.grpc_service import GrpcLogSource, LedgerService
from node.ledger.http import HttpLogSource, create_app, hash_token, new_token
from node.ledger.sources import ExportSource, LedgerSource, write_export
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as pb_grpc

from .helpers import fill, make_ledger, open_engine


@pytest.fixture
def ledger(engine):
    ledger = make_ledger(engine)
    fill(ledger, 20)
    fill(ledger, 5, outcome="refused", partner="bureau")
    return ledger


def twin(tmp_path, ledger: Ledger, name: str) -> Ledger:
    """Another database signed with the same key: the node showing a second history."""
    other = make_ledger(open_engine(f"sqlite:///{tmp_path / name}.db"))
    other.signer = ledger.signer
    return other


def test_export_file_verifies_offline(ledger, tmp_path):
    path = tmp_path / "hrss.jsonl"
    with open(path, "wb") as out:
        head = write_export(ledger, out)
    known = KnownHeads(tmp_path / "auditor")
    verdict = verify(ExportSource(path), known)
    assert verdict.ok, str(verdict)
    assert (verdict.size, verdict.checked_entries) == (head.size, 25)
    assert known.key("hrss") == ledger.public_key and known.heads("hrss") == [head]
    lines = path.read_bytes().splitlines()
    path.write_bytes(b"\n".join(lines[:-1]) + b"\n")  # a truncated export
    verdict = verify(ExportSource(path), known)
    assert [(f.kind, f.where) for f in verdict.findings] == [("entries", "entry 24")]


@contextmanager
def serving(app):
    """The app on a real uvicorn server bound to port 0, in a thread."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)


def test_http_api_serves_auditors_only(ledger, engine, tmp_path):
    token, digest = new_token()
    with serving(create_app(engine, ledger, [digest, hash_token("another auditor")])) as url:
        with httpx.Client(base_url=url) as client:
            _http_checks(client, url, token, tmp_path)


def _http_checks(client, url, token, tmp_path):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {token}"}):
        response = client.get("/v1/ledger/head", headers=headers)
        assert response.status_code in (401, 403)
    refused = verify(HttpLogSource(url, "wrong"),
                     KnownHeads(tmp_path / "auditor"))
    assert not refused.ok and "refused (401)" in str(refused)

    source = HttpLogSource(url, token)
    verdict = verify(source, KnownHeads(tmp_path / "auditor"))
    assert verdict.ok, str(verdict)
    ranged = verify(source, KnownHeads(tmp_path / "auditor"), start=3, end=9)
    assert ranged.ok and ranged.checked_entries == 6
    assert [i for i, _ in source.decoded(outcome="refused")] == list(range(20, 25))
    assert [e.dataset for _, e in source.decoded(partner="bureau", limit=2)] == ["flexible_workers"] * 2
    bad = client.get("/v1/ledger/entries", params={"since": "yesterday"},
                     headers={"Authorization": f"Bearer {token}"})
    assert bad.status_code == 400
    assert client.get("/v1/ledger/proof/inclusion", params={"index": 0, "size": 99},
                      headers={"Authorization": f"Bearer {token}"}).status_code == 400

    export = client.get("/v1/ledger/export", headers={"Authorization": f"Bearer {token}"})
    assert export.status_code == 200
    (tmp_path / "dl.jsonl").write_bytes(export.content)
    assert verify(ExportSource(tmp_path / "dl.jsonl"), KnownHeads(tmp_path / "auditor")).ok


def test_tokens_must_be_configured_as_digests(ledger, engine):
    with pytest.raises(ValueError, match="never in clear"):
        create_app(engine, ledger, ["plain-token"])


def test_a_second_history_at_the_same_size_is_a_fork(ledger, tmp_path):
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    other = twin(tmp_path, ledger, "same-size")
    fill(other, 25)
    verdict = verify(LedgerSource(other), known)
    assert [(f.kind, f.where) for f in verdict.findings] == [("fork", "tree size 25")]
    assert len(known.heads("hrss")) == 1  # a failing head is never learned


def test_a_grown_log_with_another_prefix_is_a_fork(ledger, tmp_path):
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    other = twin(tmp_path, ledger, "longer")
    fill(other, 30)
    full = verify(LedgerSource(other), known)
    assert [(f.kind, f.where) for f in full.findings] == [("fork", "tree size 25")]
    ranged = verify(LedgerSource(other), known, start=0, end=2)
    assert [(f.kind, f.where) for f in ranged.findings] == [("fork", "tree size 25")]


def test_a_shrinking_log_is_a_rollback(ledger, tmp_path):
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    other = twin(tmp_path, ledger, "shorter")
    fill(other, 7)
    verdict = verify(LedgerSource(other), known)
    assert ("rollback", "tree size 7") in [(f.kind, f.where) for f in verdict.findings]


def test_growth_is_accepted_and_remembered(ledger, tmp_path):
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    fill(ledger, 9)
    assert verify(LedgerSource(ledger), known).ok
    assert verify(LedgerSource(ledger), known, start=30, end=34).ok
    assert [h.size for h in known.heads("hrss")] == [25, 34]


def test_a_changed_key_is_reported(ledger, tmp_path):
    known = KnownHeads(tmp_path / "auditor")
    assert verify(LedgerSource(ledger), known).ok
    impostor = make_ledger(ledger.engine)  # same log, another key
    assert verify(LedgerSource(impostor), known).findings[0].kind == "key_changed"
    impostor.sign_head(force=True)
    verdict = verify(LedgerSource(impostor), known)
    assert [f.kind for f in verdict.findings] == ["key_changed", "head_signature"]


def test_grpc_source_and_service(ledger, tmp_path):
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_LedgerServicer_to_server(LedgerService(ledger, lambda ctx: "fund"), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            source = GrpcLogSource(channel, "hrss over gRPC")
            known = KnownHeads(tmp_path / "auditor")
            assert verify(source, known).ok
            fill(ledger, 4)
            assert verify(source, known, start=20, end=29).ok
            with pytest.raises(Exception, match="OUT_OF_RANGE"):
                list(source.entries(0, 1000))
            with pytest.raises(Exception, match="OUT_OF_RANGE"):
                source.inclusion_proof(0, 1000)
    finally:
        server.stop(None)
