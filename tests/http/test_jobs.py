"""Batch jobs through `/v1/jobs`, on a real node context: upload, run, download, cancel,
restart, retention; attacked with wrong roles, other operators' ids, scopes, replays and
bad uploads. A local-only rule (the node's own depositors) keeps partners out of it: the
e2e tests (tests/e2e/test_jobs_e2e.py) run jobs against a partner over TLS."""
from __future__ import annotations

import io
import random
import zipfile
from datetime import timedelta
from pathlib import Path
from types import SimpleNamespace

import openpyxl
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from adapters import IdType, open_csv, synthetic_resident_id
from node.core.clock import FixedClock
from node.core.source_config import NamedSqlSource
from node.core.config import load_config
from node.datasets.registration import register
from node.devtools.localnet import Federation
from node.http.app import create_app
from node.ledger.http import hash_token as digest_of
from node.jobs import queue
from node.jobs.worker import claim_next, run_job
from node.ledger import decode
from node.runtime.context import NodeContext
from node.storage.schema import jobs

TOKENS = {"ops": "operator-token-1", "ops2": "operator-token-2", "ops3": "operator-token-3",
          "adm": "admin-token-1", "aud": "auditor-token-1"}
RULES = """
[rules]
known = 'fund.depositors'
flexible = 'hrss.flexible_workers'

[purposes]
flexible = "flexible-worker-deposit"
"""


def _tokens() -> list[dict]:
    roles = {"ops": "operator", "ops2": "operator", "ops3": "operator", "adm": "admin", "aud": "auditor"}
    scopes = {"ops2": {"purposes": ["housing-loan"]}, "ops3": {"rules": ["flexible"]}}
    return [{"name": n, "digest": digest_of(t), "role": roles[n], **scopes.get(n, {})}
            for n, t in TOKENS.items()]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("jobs")
    rng = random.Random(12)
    people = sorted({synthetic_resident_id(rng) for _ in range(12)})
    depositors, others = people[:8], people[8:11]
    (root / "rules.toml").write_text(RULES, encoding="utf-8")
    fed = Federation(root / "fed")
    fed.add_node("fund", partners=[{"id": "hrss", "address": "127.0.0.1:9"}], grpc={"connect_seconds": 1},
                 datasets=[{"name": "depositors"}],
                 extra={"service": {"rules_file": str(root / "rules.toml"), "max_upload_mib": 1,
                                    "result_retention_hours": 1},
                        "http": {"tokens": _tokens()}})
    from node.devtools.synthetic import write_csv
    write_csv(root / "depositors.csv", ["sfzh"], [[p] for p in depositors])
    clock = FixedClock()
    ctx = NodeContext(load_config(fed.nodes["fund"].config_path), clock=clock)
    with open_csv(root / "depositors.csv") as src:
        register(ctx, "depositors", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="depositors")
    # 6 depositors, 3 others, one row whose identifier is not one
    applicants = [*depositors[:6], *others, "not-an-id"]
    rows = [(f"申{i:03d}", p, f"姓名{i}") for i, p in enumerate(applicants)]
    truth = {f"申{i:03d}": ("符合" if p in depositors else "无法判定" if p == "not-an-id" else "不符合")
             for i, p in enumerate(applicants)}
    client = TestClient(create_app(ctx, grpc_serving=lambda: True))
    yield SimpleNamespace(ctx=ctx, clock=clock, client=client, rows=rows, truth=truth, root=root)
    ctx.close()


def bearer(name: str, key: str | None = None) -> dict:
    h = {"Authorization": f"Bearer {TOKENS[name]}"}
    return {**h, "Idempotency-Key": key} if key else h


def csv_bytes(rows, encoding="utf-8") -> bytes:
    lines = ["申请编号,身份证号,姓名", *(",".join(r) for r in rows)]
    return ("\r\n".join(lines) + "\r\n").encode(encoding)


_keys = iter(range(10**6))


def post(node, *, who="ops", content: bytes | None = None, name="申请.csv", key=None, **fields):
    fields = {"rule": "known", "id_column": "身份证号", **fields}
    content = csv_bytes(node.rows) if content is None else content
    return node.client.post("/v1/jobs", headers=bearer(who, key or f"k{next(_keys)}"),
                            data=fields, files={"file": (name, content)})


def job_rows(node) -> list[str]:
    with node.ctx.engine.connect() as conn:
        return list(conn.execute(sa.select(jobs.c.id)).scalars())


def left_behind(node) -> list[Path]:
    """Files under the jobs directory that belong to no job."""
    known = set(job_rows(node))
    base = node.ctx.config.data_dir / "jobs"
    return [p for p in base.rglob("*") if p.is_file() and p.relative_to(base).parts[0] not in known]


def run_all(node) -> None:
    while (job := claim_next(node.ctx)) is not None:
        run_job(node.ctx, job)


def test_upload_run_download_in_every_format(node):
    r = post(node, content=csv_bytes(node.rows, "gb18030"), encoding="auto")
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["status"] == "queued" and job["total"] == len(node.rows)
    run_all(node)
    status = node.client.get(f"/v1/jobs/{job['id']}", headers=bearer("ops")).json()
    assert status["status"] == "done" and status["error"] is None
    assert status["counts"] | {"eligible": 6, "not_eligible": 3, "undetermined": 1} == status["counts"]
    x = node.client.get(f"/v1/jobs/{job['id']}/result?format=xlsx&lang=zh", headers=bearer("ops"))
    assert x.status_code == 200 and "attachment" in x.headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(x.content)).worksheets[0]
    header, *rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    assert header[:5] == ["行号", "申请编号", "身份证号", "姓名", "判定"]
    assert {r[1]: r[4] for r in rows} == node.truth
    en = node.client.get(f"/v1/jobs/{job['id']}/result?format=csv&lang=en", headers=bearer("ops"))
    assert en.text.splitlines()[0].lstrip("\ufeff").startswith("line,申请编号,身份证号,姓名,decision,explanation")
    assert "eligible: " in en.text and "符合条件" not in en.text
    js = node.client.get(f"/v1/jobs/{job['id']}/result?format=json", headers=bearer("ops")).json()
    assert js["query"]["rule"] == "known" and len(js["rows"]) == len(node.rows)
    rej = node.client.get(f"/v1/jobs/{job['id']}/rejects?format=json&lang=en", headers=bearer("ops")).json()
    assert [list(r) for r in rej["rows"]] == [["line", "申请编号", "姓名", "reason"]] and \
        [r["申请编号"] for r in rej["rows"]] == ["申009"]
    assert all("身份证号" not in r for r in rej["rows"])  # never the identifier
    page = node.client.get(f"/v1/jobs/{job['id']}/rows?offset=8&limit=5&lang=en", headers=bearer("ops")).json()
    assert page["total"] == len(node.rows) and [r[1] for r in page["rows"]] == ["申008", "申009"]
    assert page["columns"][4] == "decision" and page["rows"][0][4] == "not_eligible"
    mine = node.client.get("/v1/jobs", headers=bearer("ops")).json()
    assert job["id"] in [j["id"] for j in mine]


def test_xlsx_upload_keeps_the_lost_digits_check(node):
    wb = openpyxl.Workbook()
    wb.active.append(["申请编号", "身份证号", "姓名"])
    first = node.rows[0]
    number = first[1] if not first[1].endswith("X") else node.rows[1][1]
    wb.active.append(["申A", float(int(number)), "x"])  # typed as a number: digits lost
    wb.active.append(["申B", number, "y"])
    buf = io.BytesIO()
    wb.save(buf)
    r = post(node, content=buf.getvalue(), name="list.xlsx")
    assert r.status_code == 202, r.text
    run_all(node)
    rej = node.client.get(f"/v1/jobs/{r.json()['id']}/rejects?format=json&lang=en",
                          headers=bearer("ops")).json()
    assert [(x["申请编号"], "digits lost" in x["reason"]) for x in rej["rows"]] == [("申A", True)]


def test_roles_and_owners(node):
    job = post(node).json()
    for who in ("adm", "aud"):
        assert node.client.get("/v1/jobs", headers=bearer(who)).status_code == 403
        for path in ("", "/result", "/rejects", "/rows"):
            assert node.client.get(f"/v1/jobs/{job['id']}{path}", headers=bearer(who)).status_code == 403
        assert node.client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer(who, "x")).status_code == 403
        assert post(node, who=who).status_code == 403
    assert node.client.get("/v1/jobs").status_code == 401
    # another operator: not found, whatever it tries
    for path in ("", "/result", "/rejects", "/rows"):
        r = node.client.get(f"/v1/jobs/{job['id']}{path}", headers=bearer("ops2"))
        assert r.status_code == 404 and job["id"] in r.text
    r = node.client.post(f"/v1/jobs/{job['id']}/cancel", headers=bearer("ops2", "c1"))
    assert r.status_code == 404
    assert job["id"] not in [j["id"] for j in node.client.get("/v1/jobs", headers=bearer("ops2")).json()]
    assert node.client.get("/v1/jobs/nope", headers=bearer("ops")).status_code == 404


def test_scopes_are_checked_before_anything_is_kept(node):
    before = job_rows(node)
    r = post(node, who="ops2", rule="flexible")  # states a purpose ops2 may not state
    assert r.status_code == 403 and "flexible-worker-deposit" in r.json()["detail"]
    r = post(node, who="ops3", rule="known")  # a rule ops3 may not run
    assert r.status_code == 403 and "known" in r.json()["detail"]
    r = post(node, who="ops2", rule="", partner="hrss", dataset="flexible_workers",
             purpose="flexible-worker-deposit")
    assert r.status_code == 403
    assert job_rows(node) == before and left_behind(node) == []


def test_idempotent_post_replays_the_same_job(node):
    first = post(node, key="same-key")
    again = post(node, key="same-key")
    assert first.status_code == again.status_code == 202
    assert again.json()["id"] == first.json()["id"] and again.headers["Idempotent-Replayed"] == "true"
    other = post(node, key="same-key", content=csv_bytes(node.rows[:3]))
    assert other.status_code == 422  # the same key with other bytes
    assert node.client.post("/v1/jobs", headers=bearer("ops"), data={"rule": "known"},
                            files={"file": ("a.csv", b"x")}).status_code == 428
    assert left_behind(node) == []


def _bomb() -> bytes:
    buf = io.BytesIO()
    wb = openpyxl.Workbook()
    wb.active.append(["身份证号"])
    base = io.BytesIO()
    wb.save(base)
    row = b'<row><c t="inlineStr"><is><t>x</t></is></c></row>' * 20_000
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


@pytest.mark.parametrize("case", ["utf16", "late_gbk", "bomb", "xls", "no_column", "damaged"])
def test_bad_uploads_leave_nothing(node, case):
    before = job_rows(node)
    good = csv_bytes(node.rows)
    content, name, fields = {
        "utf16": ("\ufeff申请编号,身份证号\r\n".encode("utf-16"), "a.csv", {}),
        # valid UTF-8 for 64 KiB, then a GB18030 line: found on reading, not on sniffing
        "late_gbk": (good + ("申X," + node.rows[0][1] + ",x\r\n").encode() * 2000
                     + "申Y,张三,x\r\n".encode("gb18030"), "a.csv", {"encoding": "utf-8"}),
        "bomb": (_bomb(), "a.xlsx", {}),
        "xls": (b"\xd0\xcf\x11\xe0" + b"\0" * 100, "a.xls", {}),
        "no_column": (good, "a.csv", {"id_column": "证件号"}),
        "damaged": (b"PK\x03\x04 not a zip", "a.xlsx", {}),
    }[case]
    r = post(node, content=content, name=name, **fields)
    assert r.status_code == 422, r.text
    assert "Traceback" not in r.text and node.rows[0][1] not in r.text
    assert job_rows(node) == before and left_behind(node) == []


def test_oversize_uploads_are_cut_off_while_streaming(node):
    before = job_rows(node)
    big = csv_bytes(node.rows) + b"x" * (2 << 20)
    r = post(node, content=big)
    assert r.status_code == 413 and "max_upload_mib" in r.json()["detail"]

    def chunks():  # no Content-Length: the bound is applied while the body streams
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n"
        for _ in range(40):
            yield b"y" * (1 << 16)
    r = node.client.post("/v1/jobs", headers={**bearer("ops", "chunked"),
                                              "Content-Type": "multipart/form-data; boundary=b"},
                         content=chunks())
    assert r.status_code == 413
    assert job_rows(node) == before and left_behind(node) == []


def test_cancel_queued_and_running(node):
    run_all(node)  # jobs other tests left queued
    queued = post(node).json()
    r = node.client.post(f"/v1/jobs/{queued['id']}/cancel", headers=bearer("ops", "cq"))
    assert r.status_code == 200 and r.json()["status"] == "cancelled"
    assert claim_next(node.ctx) is None  # a cancelled job never runs
    running = post(node).json()
    job = claim_next(node.ctx)
    assert job.id == running["id"]
    r = node.client.post(f"/v1/jobs/{job.id}/cancel", headers=bearer("ops", "cr"))
    assert r.json()["status"] == "running" and r.json()["cancel_requested"]
    assert run_job(node.ctx, job) is queue.Status.CANCELLED  # stops at its first progress step
    got = node.client.get(f"/v1/jobs/{job.id}/result", headers=bearer("ops"))
    assert got.status_code == 409
    done = post(node).json()
    run_all(node)
    assert node.client.post(f"/v1/jobs/{done['id']}/cancel", headers=bearer("ops", "cd")).status_code == 409


def test_restart_fails_running_jobs_and_keeps_queued_ones(node):
    run_all(node)
    a = post(node).json()
    node.clock.advance(timedelta(seconds=1))  # the oldest queued job runs first
    b = post(node).json()
    claimed = claim_next(node.ctx)
    assert claimed.id == a["id"]
    stray = node.ctx.config.data_dir / "jobs" / "deadbeef"
    stray.mkdir()
    (stray / "input.csv").write_bytes(b"x")
    assert queue.recover(node.ctx) == [a["id"]]
    failed = queue.get(node.ctx, a["id"])
    assert failed.status is queue.Status.FAILED and "node stopped while this job ran" in failed.error
    assert queue.get(node.ctx, b["id"]).status is queue.Status.QUEUED and not stray.exists()
    run_all(node)
    assert queue.get(node.ctx, b["id"]).status is queue.Status.DONE


def test_retention_deletes_files_and_ledgers_it(node):
    job = post(node).json()
    run_all(node)
    assert node.client.get(f"/v1/jobs/{job['id']}/result", headers=bearer("ops")).status_code == 200
    directory = node.ctx.config.data_dir / "jobs" / job["id"]
    assert directory.exists()
    node.clock.advance(timedelta(minutes=59))
    assert job["id"] not in queue.expire(node.ctx)
    node.clock.advance(timedelta(minutes=2))
    assert job["id"] in queue.expire(node.ctx)
    assert not directory.exists()
    status = node.client.get(f"/v1/jobs/{job['id']}", headers=bearer("ops")).json()
    assert status["status"] == "expired" and status["counts"]["ended"] == "done"
    assert node.client.get(f"/v1/jobs/{job['id']}/result", headers=bearer("ops")).status_code == 409
    entries = [decode(b) for _, b in node.ctx.ledger.entries()]
    (entry,) = [e for e in entries if getattr(e, "subject", "") == f"job:{job['id']}"]
    assert entry.action == "job_files_deleted" and entry.details["files"] >= 3
    text = repr(entry.details)
    assert all(p not in text for _, p, _ in node.rows) and "申" not in text


def test_a_job_over_a_named_sql_source(node, monkeypatch):
    db = node.root / "applications.db"
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE pending (申请编号 TEXT PRIMARY KEY, 身份证号 TEXT, 姓名 TEXT)"))
        conn.execute(sa.text("INSERT INTO pending VALUES (:a, :b, :c)"),
                     [dict(zip("abc", r)) for r in node.rows])
    engine.dispose()
    monkeypatch.setenv("TEST_APPLICATIONS_URL", f"sqlite:///{db}")
    service = node.ctx.config.service.model_copy(update={"applicant_sources": [
        NamedSqlSource(name="pending", url_env="TEST_APPLICATIONS_URL", table="pending")]})
    monkeypatch.setattr(node.ctx, "config", node.ctx.config.model_copy(update={"service": service}))
    body = {"source": "pending", "rule": "known", "id_column": "身份证号"}
    r = node.client.post("/v1/jobs", headers=bearer("ops", "sql-1"), json=body)
    assert r.status_code == 202, r.text
    run_all(node)
    js = node.client.get(f"/v1/jobs/{r.json()['id']}/result?format=json", headers=bearer("ops")).json()
    assert {row["申请编号"]: row["判定"] for row in js["rows"]} == node.truth
    r = node.client.post("/v1/jobs", headers=bearer("ops", "sql-2"), json={**body, "source": "nope"})
    assert r.status_code == 422 and "no applicant source named 'nope'" in r.json()["detail"]
    monkeypatch.delenv("TEST_APPLICATIONS_URL")
    r = node.client.post("/v1/jobs", headers=bearer("ops", "sql-3"), json=body)
    assert r.status_code == 422 and "TEST_APPLICATIONS_URL is not set" in r.json()["detail"]


def test_console_sessions_submit_with_the_csrf_field_or_header(node):
    from node.core.service_config import Role
    from node.http.auth import SESSION_COOKIE, Authenticator, Principal, csrf_token
    secret = Authenticator(node.ctx).open_session(Principal("ops", Role.OPERATOR))
    client = TestClient(node.client.app)
    client.cookies.set(SESSION_COOKIE, secret)
    files = {"file": ("a.csv", csv_bytes(node.rows))}
    fields = {"rule": "known", "id_column": "身份证号"}
    r = client.post("/v1/jobs", headers={"Idempotency-Key": "s1"}, data={**fields, "csrf": csrf_token(secret)},
                    files=files)
    assert r.status_code == 202, r.text  # the form the CSRF check read
    r = client.post("/v1/jobs", headers={"Idempotency-Key": "s2", "X-CSRF-Token": csrf_token(secret)},
                    data=fields, files=files)
    assert r.status_code == 202, r.text  # streamed
    r = client.post("/v1/jobs", headers={"Idempotency-Key": "s3"}, data=fields, files=files)
    assert r.status_code == 403  # no CSRF token
    assert left_behind(node) == []


def test_a_rule_takes_no_authorisation_column(node):
    r = post(node, auth_column="申请编号")
    assert r.status_code == 422 and "authorisation column" in r.json()["detail"]


def test_a_stopping_node_fails_its_running_job_with_the_reason(node):
    import threading
    run_all(node)
    job_id = post(node).json()["id"]
    job = claim_next(node.ctx)
    stopping = threading.Event()
    stopping.set()
    assert run_job(node.ctx, job, stopping) is queue.Status.FAILED
    assert queue.get(node.ctx, job_id).error == queue.STOPPED_WHILE_RUNNING


def test_one_claimant_wins_each_job(node):
    import threading
    run_all(node)
    post(node)
    won, start = [], threading.Barrier(4)

    def claim():
        start.wait()
        won.append(claim_next(node.ctx))
    threads = [threading.Thread(target=claim) for _ in range(4)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    assert len([j for j in won if j is not None]) == 1
    run_job(node.ctx, next(j for j in won if j is not None))


def test_an_unreachable_partner_fails_the_job_with_its_reason(node):
    run_all(node)
    r = post(node, rule="", partner="hrss", dataset="flexible_workers", purpose="flexible-worker-deposit")
    assert r.status_code == 202, r.text
    run_all(node)
    job = node.client.get(f"/v1/jobs/{r.json()['id']}", headers=bearer("ops")).json()
    assert job["status"] == "failed" and "hrss" in job["error"] and "incident" not in job["error"]
    assert not any(p in job["error"] for _, p, _ in node.rows)


def test_any_body_past_the_bound_is_cut_off(node):
    def chunks():  # a JSON body, chunked: nothing but the middleware bounds it
        yield b'{"source": "'
        for _ in range(40):
            yield b"y" * (1 << 16)
    r = node.client.post("/v1/jobs", headers={**bearer("ops", "json-big"), "Content-Type": "application/json"},
                         content=chunks())
    assert r.status_code == 413 and "max_upload_mib" in r.json()["detail"]
    assert r.headers["x-frame-options"] == "DENY"  # the security headers wrap the refusal


def test_job_ids_never_look_like_an_identifier():
    import re
    from node.ledger.canonical import _ID_LIKE
    ids = [queue.new_job_id() for _ in range(20_000)]
    assert not any(_ID_LIKE.search(i) or re.search(r"\d{10}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_an_owner_name_shaped_like_an_identifier_stays_out_of_the_ledger(node):
    from node.jobs.inputs import ListSpec
    from node.jobs.targets import RuleTarget
    run_all(node)
    upload = queue.incoming_dir(node.ctx) / "up.part"
    upload.write_bytes(csv_bytes(node.rows))
    owner = "320401199001011234"  # a token name may be all digits
    job = queue.submit(node.ctx, owner=owner, target=RuleTarget("known"), upload=upload,
                       spec=ListSpec(id_column="身份证号", file_name="a.csv", file_format="csv"))
    run_all(node)
    node.clock.advance(timedelta(hours=2))
    assert job.id in queue.expire(node.ctx)
    entries = [decode(b) for _, b in node.ctx.ledger.entries()]
    (entry,) = [e for e in entries if getattr(e, "subject", "") == f"job:{job.id}"]
    assert "owner" not in entry.details and entry.details["ended"] == "done"


def test_a_truncated_form_is_refused(node):
    body = (b"--b\r\nContent-Disposition: form-data; name=\"id_column\"\r\n\r\n\xe8\xba\xab\xe4\xbb\xbd\xe8\xaf\x81\xe5\x8f\xb7\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"rule\"\r\n\r\nknown\r\n"
            b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n\r\n"
            + csv_bytes(node.rows)[:-40])  # no closing boundary: the client went away mid-file
    before = job_rows(node)
    r = node.client.post("/v1/jobs", content=body, headers={
        **bearer("ops", "trunc"), "Content-Type": "multipart/form-data; boundary=b"})
    assert r.status_code == 400 and "malformed" in r.json()["detail"]
    assert job_rows(node) == before and left_behind(node) == []


def test_metrics_count_jobs_by_status(node):
    from node.http.metrics import NodeCollector
    post(node)
    (family,) = [f for f in NodeCollector(node.ctx).collect() if f.name == "shuqiao_jobs"]
    seen = {s.labels["status"]: s.value for s in family.samples}
    with node.ctx.engine.connect() as conn:
        truth = dict(conn.execute(sa.select(jobs.c.status, sa.func.count()).group_by(jobs.c.status)).all())
    assert set(seen) == {s.value for s in queue.Status}
    assert all(seen[k] == truth.get(k, 0) for k in seen) and sum(seen.values()) > 0


def test_an_empty_file_input_is_no_file(node):
    r = node.client.post("/v1/jobs", headers=bearer("ops", "empty-input"),
                         data={"rule": "known", "id_column": "身份证号"}, files={"file": ("", b"")})
    assert r.status_code == 400 and "no file" in r.json()["detail"]
    assert left_behind(node) == []


def test_statuses_say_whose_mistake_it_is(node, monkeypatch):
    before = job_rows(node)
    r = post(node, rule="nope")
    assert r.status_code == 404 and "no rule 'nope'" in r.json()["detail"]
    r = post(node, rule="", partner="edu", dataset="graduates", purpose="x-y")
    assert r.status_code == 404 and "no partner 'edu'" in r.json()["detail"]
    r = post(node, rule="", partner="hrss", dataset="flexible_workers", purpose="flexible-worker-deposit",
             kind="predicate")
    assert r.status_code == 422 and "needs a predicate" in r.json()["detail"]
    service = node.ctx.config.service.model_copy(update={"rules_file": node.root / "missing.toml"})
    monkeypatch.setattr(node.ctx, "config", node.ctx.config.model_copy(update={"service": service}))
    r = post(node)
    assert r.status_code == 503 and "rules_file" in r.json()["detail"]  # the node's to fix
    assert job_rows(node) == before and left_behind(node) == []
