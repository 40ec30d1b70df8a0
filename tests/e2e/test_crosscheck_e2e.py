"""`audit cross-check` on a real, honest federation: refusals and a node killed mid-query
are classified, not reported as problems; a forged asker record is a mismatch by id."""
from __future__ import annotations

import random
import sqlite3
import subprocess
import sys
import time
import uuid

import pytest

from adapters import synthetic_resident_id
from node.devtools.synthetic import write_csv

from . import fixtures as fx

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def federation(tmp_path_factory):
    root = tmp_path_factory.mktemp("crosscheck")
    s = fx.build(root, registry_size=2000, applicants=200, grant={
        "kinds": ["membership", "predicate", "cardinality"], "predicate_columns": ["缴费月数"],
        "dp_epsilon": 1.0, "dp_budget": 1.5})
    s.root = root
    fx.start(s)
    fx.register(s)
    yield s
    s.fed.close()


def _cli_query(s, out, *extra, kind="membership", purpose=fx.PURPOSE, input_path=None):
    args = ["query", kind, "--config", s.cfg("fund"), "--partner", "hrss",
            "--dataset", "flexible_workers", "--purpose", purpose,
            "--input", str(input_path or s.applicants_csv), "--id-column", "身份证号"]
    if kind == "membership":
        args += ["--out", str(out)]
    return s.fed.cli(*args, *extra, check=False)


def _admitted_unfinished(s) -> bool:
    con = sqlite3.connect(s.fed.nodes["hrss"].directory / "node.db", timeout=5)
    try:
        rows = con.execute("SELECT query_id, outcome FROM ledger_entries WHERE type = 'query'").fetchall()
    finally:
        con.close()
    admitted = {q for q, o in rows if o == "admitted"}
    completed = {q for q, o in rows if o != "admitted"}
    return bool(admitted - completed)


def _kill_agency_mid_query(s) -> None:
    rng = random.Random(99)
    big = s.root / "many-applicants.csv"
    write_csv(big, ["申请编号", "身份证号"],
              ((f"B{i:06d}", synthetic_resident_id(rng)) for i in range(60_000)))
    asker = subprocess.Popen(
        [sys.executable, "-m", "node", "query", "membership", "--config", s.cfg("fund"),
         "--partner", "hrss", "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
         "--input", str(big), "--id-column", "身份证号", "--out", str(s.root / "big.csv")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not _admitted_unfinished(s):
        assert asker.poll() is None and time.monotonic() < deadline, "the query never got admitted"
        time.sleep(0.02)
    s.fed.stop("hrss", kill=True)
    assert asker.wait(120) != 0  # the asker saw its partner go away


def _export(s, node: str, name: str):
    path = s.root / name
    s.fed.cli("audit", "export", "--config", s.cfg(node), "--out", str(path))
    return f"export:{path}"


def _cross_check(s, tag: str):
    return s.fed.cli("audit", "cross-check", "--asker", _export(s, "fund", f"fund-{tag}.jsonl"),
                     "--answerer", _export(s, "hrss", f"hrss-{tag}.jsonl"), check=False)


def test_honest_federation_with_refusals_and_a_killed_agency_cross_checks_clean(federation):
    s = federation
    assert _cli_query(s, s.root / "ok.csv").returncode == 0
    assert _cli_query(s, s.root / "x.csv", purpose="unlisted-purpose").returncode != 0
    assert _cli_query(s, s.root / "p.csv", "--kind", "predicate",
                      "--predicate", "所属区 == '天宁区'").returncode != 0  # not an allowed column
    assert _cli_query(s, None, kind="cardinality").returncode == 0
    spent = _cli_query(s, None, kind="cardinality")
    assert spent.returncode != 0 and "budget" in spent.stderr
    _kill_agency_mid_query(s)
    r = _cross_check(s, "honest")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "OK" in r.stdout and "0 MISMATCH" in r.stdout
    assert "1 interrupted" in r.stdout and "never recorded by the answering node" not in r.stdout
    refused = int(r.stdout.split(" refused")[0].rsplit(" ", 1)[1])
    assert refused >= 2, r.stdout


def test_forged_asker_record_is_a_mismatch_naming_its_id(federation):
    s = federation
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    from node.policy.querylog import QueryRecord
    forged = str(uuid.uuid4())
    # the fund centre's own ledger API, on the stopped node: a query it never asked
    ctx = NodeContext(load_config(s.cfg("fund")))
    try:
        QueryRecord(query_id=forged, role="asker", asker="fund", answerer="hrss",
                    kind="membership", dataset="flexible_workers", version=1, epoch=1,
                    purpose=fx.PURPOSE, elements=50, matched=20, outcome="answered").write(ctx)
    finally:
        ctx.close()
    r = _cross_check(s, "forged")
    assert r.returncode == 1, r.stdout + r.stderr
    assert forged in r.stdout and "MISMATCH" in r.stdout
