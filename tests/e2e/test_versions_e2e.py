"""Versions between real nodes: retiring the version a partner holds after a refresh.

The fund centre holds version 1's tag table; the agency refreshes to version 2 and
retires version 1. The next query must still sync (by difference, from the retired
copy the partner holds, or whole) and answer version 2 exactly.
"""
from __future__ import annotations

import csv

import pytest

from . import fixtures as fx

pytestmark = pytest.mark.e2e


def _answers(path) -> dict[str, str]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        return {r["身份证号"]: r["shuqiao_answer"] for r in csv.DictReader(f)}


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
    before, after = _answers(tmp_path / "before.csv"), _answers(tmp_path / "after.csv")
    for person, answer in after.items():
        expected = "in_dataset" if person in outsiders else before[person]
        assert answer == expected, person
    assert any(after[p] == "in_dataset" for p in outsiders)
