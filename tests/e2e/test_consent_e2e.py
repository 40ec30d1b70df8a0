"""Consent digests between real nodes: both ledgers bind the same digest, the file recomputes it."""
from __future__ import annotations

import re

import grpc
import pytest

from node.core.config import load_config
from node.runtime.context import NodeContext
from node.ledger.entries import QueryEntry, decode
from node.ledger.sources import write_export

from . import fixtures as fx

pytestmark = pytest.mark.e2e

COLUMNS = ["身份证号", "授权编号"]


@pytest.fixture(scope="module")
def consented(tmp_path_factory):
    root = tmp_path_factory.mktemp("consent")
    s = fx.build(root, registry_size=100, applicants=20)
    fx.start(s)
    fx.register(s)
    s.fed.start("fund")
    s.root = root
    yield s
    s.fed.close()


def ask(s, path):
    r = s.fed.cli("query", "membership", "--config", s.cfg("fund"), "--partner", "hrss",
                  "--dataset", "flexible_workers", "--purpose", fx.PURPOSE, "--input", str(path),
                  "--id-column", COLUMNS[0], "--auth-column", COLUMNS[1], "--out", str(path.with_suffix(".out.csv")))
    return re.search(r"query ([0-9a-f-]{36}):", r.stdout).group(1)


def completed(s, node: str, query_id: str) -> QueryEntry:
    ctx = NodeContext(load_config(s.cfg(node)))
    try:
        (entry,) = [e for e in (decode(d) for _, d in ctx.ledger.entries())
                    if isinstance(e, QueryEntry) and e.query_id == query_id and e.phase == "completed"]
        return entry
    finally:
        ctx.close()


def export(s, node: str) -> str:
    path = s.root / f"{node}.jsonl"
    ctx = NodeContext(load_config(s.cfg(node)))
    try:
        with open(path, "wb") as f:
            write_export(ctx.ledger, f)
    finally:
        ctx.close()
    return f"export:{path}"


def audit_consent(s, path, *extra):
    return s.fed.cli("audit", "consent", "--input", str(path), "--id-column", COLUMNS[0],
                     "--auth-column", COLUMNS[1], *extra, check=False)


def test_consent_digest_is_bound_by_both_ledgers_and_recomputed_from_the_file(consented):
    s = consented
    p = s.registry[:2] + s.applicants[-1:]
    src = s.root / "applicants.csv"
    fx.write_csv(src, COLUMNS, [[p[0], "GJJ-R1"], [p[0], "GJJ-R2"], [p[1], "GJJ-R3"],
                                [p[2], "GJJ-R4"], [s.registry[5], ""], ["not-an-id", "GJJ-R5"]])
    query_id = ask(s, src)
    fund, hrss = completed(s, "fund", query_id), completed(s, "hrss", query_id)
    assert fund.authorisation_digest and fund.authorisation_digest == hrss.authorisation_digest
    assert fund.receipt.query.authorisation_digest == fund.authorisation_digest  # hrss signed it
    r = audit_consent(s, src, "--ledger", export(s, "fund"), "--ledger", export(s, "hrss"),
                      "--query-id", query_id)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"consent digest {fund.authorisation_digest} over 4 rows" in r.stdout
    assert r.stdout.count("matches") == 2
    r = s.fed.cli("audit", "cross-check", "--asker", export(s, "fund"), "--answerer", export(s, "hrss"),
                  check=False)
    assert r.returncode == 0, r.stdout


def test_one_person_on_two_rows_digests_differently_from_one_row_with_joined_references(consented):
    s = consented
    person = s.registry[3]
    two_rows, one_row = s.root / "two.csv", s.root / "one.csv"
    fx.write_csv(two_rows, COLUMNS, [[person, "R1"], [person, "R2"]])
    fx.write_csv(one_row, COLUMNS, [[person, "R1|R2"]])
    query_id = ask(s, two_rows)
    bound = completed(s, "hrss", query_id).authorisation_digest
    assert audit_consent(s, two_rows, "--expect", bound).returncode == 0
    r = audit_consent(s, one_row, "--expect", bound)
    assert r.returncode == 1 and "MISMATCH" in r.stdout, r.stdout


def test_malformed_consent_digest_refused_before_any_answer(consented):
    err = fx.refusal(consented, [fx.header(consented, consent_digest="R1|R2"),
                                 fx.pb.EvaluateRequest(finish=fx.pb.Finish())])
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "consent_digest" in err.details()
