"""SIGKILL a process while it appends: acknowledged entries survive exactly once.

A child process appends entries in a loop, each in its own transaction, and prints an
entry's index and query id only after the commit returned (its "acknowledgement").
The parent kills it with SIGKILL at random moments, restarts it, and finally checks that
every acknowledged entry is in the ledger exactly once at the acknowledged index, that
indices are contiguous, and that every tree head signed before a crash is consistent
with the final tree (verify_all recomputes each head's root from the entries).
"""
from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from node.ledger import Ledger, decode
from node.ledger.signing import load_or_create_signer
from node.keys.secrets import KeyEncryptionKey
from protocols import merkle

from .helpers import open_engine

pytestmark = pytest.mark.slow  # SIGKILLs writers in a loop: make test runs it, make check does not

ROOT = Path(__file__).resolve().parents[2]
KILLS = 12

CHILD = textwrap.dedent("""
    import sys, uuid
    from node.ledger import Ledger, QueryEntry
    from node.ledger.signing import load_or_create_signer
    from node.ledger.tables import install_ledger_triggers
    from node.keys.secrets import KeyEncryptionKey
    from node.storage.schema import make_engine
    url, kek_path, run = sys.argv[1], sys.argv[2], sys.argv[3]
    engine = make_engine(url)
    install_ledger_triggers(engine)
    ledger = Ledger(engine, load_or_create_signer(engine, KeyEncryptionKey.load(kek_path), "hrss"))
    print("ready", flush=True)
    for i in range(10**9):
        qid = str(uuid.uuid4())
        entry = QueryEntry(query_id=qid, phase="completed", role="answerer", asker="fund",
                           answerer="hrss", kind="membership", dataset="flexible_workers",
                           version=1, epoch=1, purpose="housing_fund", elements=i + 1,
                           outcome="answered", reason="", time=ledger.now())
        with engine.begin() as conn:
            index = ledger.append(conn, entry)
            if i % 7 == 6:
                ledger.sign_head(conn)
        print(index, qid, flush=True)  # acknowledged: the commit returned
""")


def test_sigkill_never_loses_or_duplicates_an_acknowledged_entry(storage_url, tmp_path):
    engine = open_engine(storage_url)
    kek = KeyEncryptionKey.create(tmp_path / "node.kek")
    load_or_create_signer(engine, kek, "hrss")
    rng = random.Random(20250301)
    acknowledged: dict[str, int] = {}
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for run in range(KILLS):
        child = subprocess.Popen([sys.executable, "-c", CHILD, storage_url,
                                  str(tmp_path / "node.kek"), str(run)],
                                 stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT)
        assert child.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.05, 0.4))  # a full pipe only pauses the child: no harm
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
        out = child.stdout.read()
        for line in out.split("\n")[:-1]:  # a line cut by the kill was not acknowledged
            index, qid = line.split()
            acknowledged[qid] = int(index)
        child.stdout.close()
    assert len(acknowledged) > KILLS

    ledger = Ledger(engine, load_or_create_signer(engine, kek, "hrss"))
    stored = [(i, decode(data).query_id) for i, data in ledger.entries()]
    assert [i for i, _ in stored] == list(range(len(stored)))  # contiguous
    positions = {qid: i for i, qid in stored}
    assert len(positions) == len(stored)  # no query id twice
    for qid, index in acknowledged.items():
        assert positions.get(qid) == index
    report = ledger.verify_all()
    assert report.ok, str(report)
    final = ledger.sign_head()
    leaves = [merkle.hash_leaf(d) for _, d in ledger.entries()]
    for head in ledger.heads():
        head.verify(ledger.public_key)
        if 0 < head.size < final.size:
            merkle.verify_consistency(head.size, final.size, head.root, final.root,
                                      ledger.consistency_proof(head.size, final.size))
        assert merkle.root(leaves[:head.size]) == head.root
    engine.dispose()
