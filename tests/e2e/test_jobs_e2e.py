"""Batch jobs against real `shuqiao serve` processes over TLS: the fund centre's business
system uploads applicants to `/v1/jobs`, polls, and downloads the answers its partner
gave; jobs are cancelled, survive a killed node, and expire (ledgered).

A partner that does not answer is made by stopping its process (SIGSTOP): a job asking
it stays running for as long as the test needs, then goes on when it is continued."""
from __future__ import annotations

import io
import json
import os
import signal
import ssl
import time
import uuid
import zipfile

import httpx
import openpyxl
import pytest
import sqlalchemy as sa

from node.ledger.http import hash_token as digest_of
from node.ledger import decode

from . import fixtures as fx

pytestmark = pytest.mark.e2e

TOKENS = {"ops": "jobs-operator-1", "ops2": "jobs-operator-2", "adm": "jobs-admin-1"}
QUERY = {"partner": "hrss", "dataset": "flexible_workers", "purpose": fx.PURPOSE,
         "id_column": "身份证号"}


def _fund_config(s, root, **service) -> None:
    roles = {"ops": "operator", "ops2": "operator", "adm": "admin"}
    tokens = [{"name": n, "digest": digest_of(t), "role": roles[n]} for n, t in TOKENS.items()]
    address = s.fed.nodes["hrss"].address if s.fed.nodes["hrss"].port else None
    s.fed.add_node("fund", partners=[{"id": "hrss", **({"address": address} if address else {})}],
                   extra={"http": {"listen": "127.0.0.1:0", "tokens": tokens},
                          "service": {"max_upload_mib": 1, "retention_check_seconds": 0.5,
                                      **service}})


@pytest.fixture(scope="module")
def fed(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    s = fx.build(root, registry_size=500, applicants=120)
    _fund_config(s, root)
    fx.start(s)
    fx.register(s)
    s.fed.start("fund")
    s.root = root
    yield s
    _resume(s)
    s.fed.close()


def _client(s) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{s.fed.nodes['fund'].http_port}", timeout=30,
                        verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


def auth(who="ops", key: bool = False) -> dict:
    h = {"Authorization": f"Bearer {TOKENS[who]}"}
    return {**h, "Idempotency-Key": str(uuid.uuid4())} if key else h


def submit(s, client, *, content: bytes | None = None, name="申请.csv", who="ops",
           headers=None, **fields):
    content = s.applicants_csv.read_bytes() if content is None else content
    return client.post("/v1/jobs", headers=headers or auth(who, key=True),
                       data={**QUERY, **fields}, files={"file": (name, content)})


def wait_for(client, job_id, *statuses, timeout=60.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}", headers=auth()).json()
        if job["status"] in statuses:
            return job
        assert time.monotonic() < deadline, job
        time.sleep(0.2)


def fund_db(s):
    return sa.create_engine(f"sqlite:///{s.fed.nodes['fund'].directory / 'node.db'}")


def job_ids(s) -> set[str]:
    engine = fund_db(s)
    with engine.connect() as conn:
        ids = set(conn.execute(sa.text("SELECT id FROM jobs")).scalars())
    engine.dispose()
    return ids


def stray_files(s) -> list:
    base = s.fed.nodes["fund"].directory / "jobs"
    known = job_ids(s)
    return [p for p in base.rglob("*") if p.is_file() and p.relative_to(base).parts[0] not in known]


def _freeze(s) -> None:
    os.kill(s.fed.nodes["hrss"].process.pid, signal.SIGSTOP)


def _resume(s) -> None:
    p = s.fed.nodes["hrss"].process
    if p is not None and p.poll() is None:
        os.kill(p.pid, signal.SIGCONT)


def test_upload_poll_download_equals_the_ground_truth(fed):
    registry = set(fed.registry)
    with _client(fed) as client:
        r = submit(fed, client)
        assert r.status_code == 202, r.text
        job = wait_for(client, r.json()["id"], "done", "failed")
        assert job["status"] == "done", job
        assert job["counts"]["rows"] == len(fed.applicants)
        assert job["counts"]["matched_rows"] == sum(p in registry for p in fed.applicants)
        x = client.get(f"/v1/jobs/{job['id']}/result", params={"format": "xlsx"}, headers=auth())
        assert x.status_code == 200
        header, *rows = openpyxl.load_workbook(io.BytesIO(x.content)).worksheets[0].iter_rows(values_only=True)
        assert header == ("行号", "申请编号", "身份证号", "结果", "说明")
        got = {r[2]: r[3] for r in rows}
        assert got == {p: "是" if p in registry else "否" for p in fed.applicants}
        # the partner query behind it is in the fund centre's query log
        (logged,) = [q for q in fx.query_log(fed, "fund") if q["query_id"] == job["counts"]["query_id"]]
        assert logged["outcome"] == "answered"


def test_roles_owners_and_replays(fed):
    with _client(fed) as client:
        key = auth(key=True)
        first = submit(fed, client, headers=key)
        again = submit(fed, client, headers=key)
        assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
        job_id = first.json()["id"]
        assert client.get(f"/v1/jobs/{job_id}", headers=auth("adm")).status_code == 403
        assert submit(fed, client, who="adm").status_code == 403
        for path in ("", "/result", "/rejects"):
            assert client.get(f"/v1/jobs/{job_id}{path}", headers=auth("ops2")).status_code == 404
        assert client.post(f"/v1/jobs/{job_id}/cancel", headers=auth("ops2", key=True)).status_code == 404
        wait_for(client, job_id, "done")
        doc = client.get("/openapi.json", headers=auth()).json()["paths"]
        assert {"/v1/jobs", "/v1/jobs/{job_id}/result"} <= set(doc)
        assert set(doc["/v1/jobs"]["post"]["requestBody"]["content"]) == {"multipart/form-data",
                                                                          "application/json"}


def _bomb() -> bytes:
    base, buf = io.BytesIO(), io.BytesIO()
    wb = openpyxl.Workbook()
    wb.active.append(["身份证号"])
    wb.save(base)
    row = b'<row><c t="inlineStr"><is><t>1</t></is></c></row>' * 20_000
    with zipfile.ZipFile(base) as src, zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as out:
        for info in src.infolist():
            data = src.read(info)
            if info.filename != "xl/worksheets/sheet1.xml":
                out.writestr(info, data)
                continue
            head, rest = data.split(b"<sheetData>", 1)
            with out.open(info.filename, "w") as f:
                f.write(head + b"<sheetData>")
                for _ in range(12 * 2**20 // len(row)):
                    f.write(row)
                f.write(b"</sheetData>" + rest.split(b"</sheetData>", 1)[1])
    return buf.getvalue()


def test_bad_uploads_leave_no_job_and_no_file(fed):
    before = job_ids(fed)
    text = fed.applicants_csv.read_text(encoding="utf-8")
    with _client(fed) as client:
        for content, name, status in [
                (text.encode("utf-16"), "a.csv", 422),                       # Excel's "Unicode text"
                (text.encode() + "申Z,张三\n".encode("gb18030"), "a.csv", 422),  # UTF-8, then not
                (_bomb(), "a.xlsx", 422),
                (text.encode() * (1 + (2 << 20) // len(text.encode())), "a.csv", 413)]:
            r = submit(fed, client, content=content, name=name, encoding="utf-8")
            assert r.status_code == status, (name, r.status_code, r.text)
            assert "Traceback" not in r.text and fed.applicants[0] not in r.text
    assert job_ids(fed) == before and stray_files(fed) == []


def test_cancel_stops_a_running_job(fed):
    with _client(fed) as client:
        _freeze(fed)
        try:
            job_id = submit(fed, client).json()["id"]
            wait_for(client, job_id, "running")
            r = client.post(f"/v1/jobs/{job_id}/cancel", headers=auth(key=True))
            assert r.status_code == 200 and r.json()["cancel_requested"]
        finally:
            _resume(fed)
        job = wait_for(client, job_id, "cancelled", "done", "failed")
        assert job["status"] == "cancelled"
        assert client.get(f"/v1/jobs/{job_id}/result", headers=auth()).status_code == 409


def test_a_killed_node_fails_its_running_job_and_resumes_the_queued_one(fed):
    with _client(fed) as client:
        _freeze(fed)
        try:
            running = submit(fed, client).json()["id"]
            wait_for(client, running, "running")
            queued = submit(fed, client).json()["id"]  # one worker: it waits
            assert client.get(f"/v1/jobs/{queued}", headers=auth()).json()["status"] == "queued"
        except BaseException:
            _resume(fed)
            raise
    fed.fed.stop("fund", kill=True)
    fed.fed.start("fund")
    _resume(fed)
    with _client(fed) as client:
        failed = client.get(f"/v1/jobs/{running}", headers=auth()).json()
        assert failed["status"] == "failed"
        assert failed["error"] == ("the node stopped while this job ran; its partner queries are "
                                   "in the ledger; submit it again")
        assert wait_for(client, queued, "done", "failed")["status"] == "done"


def test_retention_deletes_the_files_and_ledgers_it(fed):
    with _client(fed) as client:
        done = [j["id"] for j in client.get("/v1/jobs", headers=auth()).json() if j["status"] == "done"]
    assert done and all((fed.fed.nodes["fund"].directory / "jobs" / d).exists() for d in done)
    fed.fed.stop("fund")
    _fund_config(fed, fed.root, result_retention_hours=0.0005)  # 1.8 s
    fed.fed.start("fund")
    with _client(fed) as client:
        for job_id in done:
            job = wait_for(client, job_id, "expired", timeout=20)
            assert job["counts"]["ended"] == "done"
            assert client.get(f"/v1/jobs/{job_id}/result", headers=auth()).status_code == 409
    assert not any((fed.fed.nodes["fund"].directory / "jobs" / d).exists() for d in done)
    engine = fund_db(fed)
    with engine.connect() as conn:
        entries = [decode(e) for e in conn.execute(sa.text(
            "SELECT entry FROM ledger_entries ORDER BY idx")).scalars()]
    engine.dispose()
    deleted = {e.subject: e for e in entries if getattr(e, "action", "") == "job_files_deleted"}
    assert {f"job:{d}" for d in done} <= set(deleted)
    text = json.dumps([dict(e.details) for e in deleted.values()], ensure_ascii=False)
    assert not any(p in text for p in fed.applicants) and "申请" not in text
