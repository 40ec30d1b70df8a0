"""Internals never leak: partners get an opaque INTERNAL with an incident id, auditors a
bounded 4xx or an opaque 500, users one line and a non-zero exit — whatever breaks.

Real `shuqiao serve` processes; the partner's side is the raw gRPC stubs (fixtures.py),
the auditor's side plain HTTPS requests, the user's side the CLI in a subprocess.
"""
from __future__ import annotations

import random
import re
import sqlite3
import ssl
import zipfile

import grpc
import httpx
import openpyxl
import pytest

from adapters import synthetic_resident_id
from node.ledger.http import new_token

from . import fixtures as fx

pytestmark = pytest.mark.e2e

INCIDENT = re.compile(r"^internal error; incident [0-9a-f]{12}$")
INTERNALS = ("select", "insert", "sqlite", "sqlalchemy", "zlib", "sealed", "traceback",
             "exception", "/", "node.db")


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("errors")
    s = fx.build(root, registry_size=300, applicants=40)
    auditor_token, auditor_digest = new_token()
    admin_token, admin_digest = new_token()
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[{
        "name": "flexible_workers", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]}],
        extra={"http": {"listen": "127.0.0.1:0", "auditor_tokens": [auditor_digest],
                        "admin_tokens": [admin_digest]}})
    s.auditor_token, s.admin_token, s.root = auditor_token, admin_token, root
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def _https(s) -> httpx.Client:
    return httpx.Client(base_url=f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}",
                        verify=ssl.create_default_context(cafile=str(s.fed.pki / "ca.pem")))


def _one_clean_line(result) -> str:
    text = (result.stdout + result.stderr).strip()
    assert result.returncode != 0, text
    assert "Traceback" not in text and "File \"" not in text, text
    assert len(text.splitlines()) == 1, text
    return text


# -- the auditor and admin HTTP API -------------------------------------------------------

def test_ledger_index_beyond_int64_is_a_4xx_not_a_500(node):
    auth = {"Authorization": f"Bearer {node.auditor_token}"}
    with _https(node) as client:
        for path, params in [("/v1/ledger/entries", {"start": 2**70}),
                             ("/v1/ledger/entries", {"start": 0, "end": 2**64}),
                             ("/v1/ledger/proof/inclusion", {"index": 2**70, "size": 1}),
                             ("/v1/ledger/proof/consistency", {"first": 1, "second": 2**70})]:
            r = client.get(path, params=params, headers=auth)
            assert 400 <= r.status_code < 500, (path, r.status_code, r.text)
            assert str(2**70) not in r.text and str(2**64) not in r.text  # the value is not echoed
        assert client.get("/v1/ledger/entries", params={"start": 0}, headers=auth).status_code == 200


def test_admin_token_without_the_bearer_scheme_refused(node):
    with _https(node) as client:
        assert client.get("/v1/admin/policy",
                          headers={"Authorization": node.admin_token}).status_code == 401
        assert client.get("/v1/admin/policy",
                          headers={"Authorization": f"Token {node.admin_token}"}).status_code == 401
        assert client.get("/v1/admin/policy",
                          headers={"Authorization": f"bEaReR {node.admin_token}"}).status_code == 200
        assert client.get("/v1/ledger/key",
                          headers={"Authorization": f"BEARER {node.auditor_token}"}).status_code == 200
        assert client.get("/v1/ledger/key",
                          headers={"Authorization": node.auditor_token}).status_code == 401


# -- the user's CLI -------------------------------------------------------------------------

def _headerless_csv(path, rng) -> tuple[str, str]:
    first = synthetic_resident_id(rng)
    path.write_text(f"{first},张0,12\n{synthetic_resident_id(rng)},李1,7\n", encoding="utf-8")
    return first, "张0"


def test_headerless_registration_file_never_echoes_its_cells(node, tmp_path):
    identifier, name = _headerless_csv(tmp_path / "headerless.csv", random.Random(11))
    r = node.fed.cli("dataset", "add", "--config", node.cfg("hrss"), "--name", "flexible_workers",
                     "--csv", str(tmp_path / "headerless.csv"), "--id-column", "公民身份号码",
                     check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "column 1, column 2, column 3" in text, text
    assert identifier not in text and name not in text and identifier[:6] not in text


def test_headerless_applicant_list_never_echoes_its_cells(node, tmp_path):
    identifier, name = _headerless_csv(tmp_path / "applicants.csv", random.Random(12))
    r = node.fed.cli("query", "membership", "--config", node.cfg("fund"), "--partner", "hrss",
                     "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                     "--input", str(tmp_path / "applicants.csv"), "--id-column", "身份证号",
                     "--out", str(tmp_path / "out.csv"), check=False)
    text = r.stdout + r.stderr
    assert r.returncode != 0 and "column 1" in text, text
    assert identifier not in text and name not in text


def test_bit_flipped_xlsx_gives_one_line_and_no_traceback(node, tmp_path):
    rng = random.Random(13)
    path = tmp_path / "roll.xlsx"
    wb = openpyxl.Workbook()
    wb.active.append(["公民身份号码", "缴费月数"])
    for _ in range(2000):
        wb.active.append([synthetic_resident_id(rng), rng.randint(1, 60)])
    wb.save(path)
    data = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("xl/worksheets/sheet1.xml")
    # the middle of the sheet's compressed data: past its local header and name
    at = info.header_offset + 30 + len(info.filename) + info.compress_size // 2
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    r = node.fed.cli("dataset", "add", "--config", node.cfg("hrss"), "--name", "flexible_workers",
                     "--xlsx", str(path), "--id-column", "公民身份号码", check=False)
    line = _one_clean_line(r)
    assert "damaged" in line and "zlib" not in line.lower() and "error -3" not in line


# -- a partner meeting an internal failure ----------------------------------------------------

def _flip_sealed_keys(s) -> None:
    s.fed.stop("hrss")
    con = sqlite3.connect(s.fed.nodes["hrss"].directory / "node.db")
    with con:
        for rowid, blob in con.execute("SELECT rowid, sealed_key FROM oprf_keys").fetchall():
            damaged = bytearray(blob)
            damaged[len(damaged) // 2] ^= 0xFF
            con.execute("UPDATE oprf_keys SET sealed_key = ? WHERE rowid = ?", (bytes(damaged), rowid))
    con.close()
    fx.start(s)


def _query(s) -> list:
    return [fx.header(s, total=3),
            fx.pb.EvaluateRequest(batch=fx.pb.ElementBatch(seq=0, elements=fx.blinded(3))),
            fx.pb.EvaluateRequest(finish=fx.pb.Finish())]


def test_partner_gets_opaque_internal_when_a_stored_key_is_damaged(node):
    assert fx.evaluate(node, _query(node))[-1].summary.elements_evaluated == 3  # before the damage
    _flip_sealed_keys(node)  # unsealing now fails inside the handler
    err = fx.refusal(node, _query(node))
    assert err.code() == grpc.StatusCode.INTERNAL, (err.code(), err.details())
    assert INCIDENT.match(err.details()), err.details()
    assert not any(word in err.details().lower() for word in INTERNALS)
    incident = err.details().rsplit(" ", 1)[1]
    log = (node.fed.nodes["hrss"].directory / "serve.log").read_text(errors="replace")
    assert f"incident {incident}" in log
    assert "could not be opened" not in log  # types and code locations, never messages


def test_partner_gets_opaque_internal_from_a_unary_call_on_damaged_rows(node):
    node.fed.stop("hrss")
    con = sqlite3.connect(node.fed.nodes["hrss"].directory / "node.db")
    with con:
        con.execute("UPDATE datasets SET attributes = '{\"缴费月数\": [1, 2' || char(10)")
    con.close()
    fx.start(node)
    with fx.channel_as(node, "fund") as ch, pytest.raises(grpc.RpcError) as exc:
        fx.pb_grpc.MembershipStub(ch).ListDatasets(fx.pb.ListDatasetsRequest(), timeout=10)
    err = exc.value
    assert err.code() == grpc.StatusCode.INTERNAL, (err.code(), err.details())
    assert INCIDENT.match(err.details()), err.details()
    assert not any(word in err.details().lower() for word in INTERNALS + ("json", "缴费"))


def test_damaged_database_header_gives_one_clear_line(node):
    node.fed.stop("hrss")
    db = node.fed.nodes["hrss"].directory / "node.db"
    with open(db, "r+b") as f:
        f.write(b"\x00" * 16)  # the "SQLite format 3" magic and more
    for args in (("dataset", "list"), ("serve",), ("audit", "check")):
        r = node.fed.cli(*args, "--config", node.cfg("hrss"), check=False, timeout=60)
        line = _one_clean_line(r)
        assert "database is damaged" in line, line
