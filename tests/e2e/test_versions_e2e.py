"""Versions between real nodes: retiring the version a partner holds after a refresh.

The fund centre holds version 1's tag table; the agency refreshes to version 2 and
retires version 1. The next query must still sync (by difference, from the retired
copy the partner holds, or whole) and answer version 2 exactly; and so after version 1
is purged, when none of its rows or tables remain.
"""
from __future__ import annotations

import base64
import csv
import json

import pytest
import sqlalchemy as sa

from node.ledger import decode

from . import fixtures as fx

pytestmark = pytest.mark.e2e


def _answers(path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {r["身份证号"]: r["结果"] for r in csv.DictReader(f)}


def test_retiring_the_held_version_after_a_refresh_keeps_queries_answering(tmp_path):
    s = fx.build(tmp_path, registry_size=300, applicants=60)
    with s.fed:
        fx.start(s)
        fx.register(s)
        fx.query(s, tmp_path / "before.csv", check=True)  # the fund centre holds version 1
        outsiders = [p for p in s.applicants if p not in set(s.registry)][:5]
        fx.write_csv(tmp_path / "add.csv", ["公民身份号码", "缴费月数"], [[p, 9] for p in outsiders])
        s.fed.cli("dataset", "update", "--config", s.cfg("hrss"), "--name", "flexible_workers",
                  "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"))
        s.fed.cli("dataset", "retire", "--config", s.cfg("hrss"), "flexible_workers",
                  "--version", "1")
        r = fx.query(s, tmp_path / "after.csv")
        assert r.returncode == 0, r.stdout + r.stderr
        # Purging: only a retired version, and then none of its rows or tables remain.
        r = s.fed.cli("dataset", "purge", "--config", s.cfg("hrss"), "flexible_workers",
                      "--version", "2", check=False)
        assert r.returncode != 0 and "only a retired version can be purged" in r.stderr + r.stdout
        r = s.fed.cli("dataset", "purge", "--config", s.cfg("hrss"), "flexible_workers",
                      "--version", "1")
        assert "purged flexible_workers version 1: 300 rows" in r.stdout
        db = sa.create_engine(f"sqlite:///{s.fed.nodes['hrss'].directory / 'node.db'}")
        with db.connect() as conn:
            v1 = conn.execute(sa.text("SELECT id, status FROM datasets WHERE name = "
                                      "'flexible_workers' AND version = 1")).one()
            left = {t: conn.execute(sa.text(f"SELECT count(*) FROM {t} WHERE dataset_id = :d"),
                                    {"d": v1.id}).scalar()
                    for t in ("dataset_chunks", "row_tags", "tag_tables")}
            v2 = conn.execute(sa.text("SELECT count(*) FROM dataset_chunks c JOIN datasets d "
                                      "ON d.id = c.dataset_id WHERE d.version = 2")).scalar()
        db.dispose()
        assert v1.status == "purged" and left == dict.fromkeys(left, 0) and v2 > 0
        r = fx.query(s, tmp_path / "again.csv")
        assert r.returncode == 0, r.stdout + r.stderr
        out = tmp_path / "hrss.jsonl"
        s.fed.cli("audit", "export", "--config", s.cfg("hrss"), "--out", str(out))
        entries = [decode(base64.b64decode(json.loads(line)["e"]))
                   for line in out.read_text().splitlines()[1:]]
        assert [e.details for e in entries if getattr(e, "action", "") == "dataset_purged"] == [
            {"version": 1, "rows": 300}]
    assert _answers(tmp_path / "again.csv") == _answers(tmp_path / "after.csv")
    before, after = _answers(tmp_path / "before.csv"), _answers(tmp_path / "after.csv")
    for person, answer in after.items():
        expected = "是" if person in outsiders else before[person]
        assert answer == expected, person
    assert any(after[p] == "是" for p in outsiders)
