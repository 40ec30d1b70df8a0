"""Cardinality between real nodes: exact without DP, noised within bounds with DP, budget."""
from __future__ import annotations

import re

import openpyxl
import pytest

from . import fixtures as fx

pytestmark = pytest.mark.e2e


def run(s, tmp_path):
    return s.fed.cli("query", "cardinality", "--config", s.cfg("fund"), "--partner", "hrss",
                     "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                     "--input", str(s.applicants_csv), "--id-column", "身份证号", check=False)


def test_exact_count_without_noise(tmp_path):
    s = fx.build(tmp_path, registry_size=600, applicants=120,
                 grant={"kinds": ["membership", "cardinality"], "min_elements": 10})
    with s.fed:
        fx.start(s)
        fx.register(s)
        r = run(s, tmp_path)
    assert r.returncode == 0, r.stderr
    assert "60 of 120 distinct identifiers are in hrss.flexible_workers (exact)" in r.stdout


def test_noised_counts_and_an_exhausted_budget(tmp_path):
    s = fx.build(tmp_path, registry_size=600, applicants=120,
                 grant={"kinds": ["cardinality"], "dp_epsilon": 1.0, "dp_budget": 2.5})
    with s.fed:
        fx.start(s)
        fx.register(s)
        outs = [run(s, tmp_path) for _ in range(3)]
    for r in outs[:2]:
        assert r.returncode == 0, r.stderr
        m = re.search(r": (-?\d+) of 120 .*epsilon 1; noise within ±(\d+)", r.stdout)
        count, bound = int(m.group(1)), int(m.group(2))
        assert abs(count - 60) <= bound
    assert outs[2].returncode == 1
    assert "budget of 2.5" in outs[2].stderr and "spent (2 used" in outs[2].stderr


def test_identifiers_that_lost_digits_in_excel_are_refused_clearly(tmp_path):
    """An 18-digit id typed into a General-format cell is a number that lost its last
    digits: the row is not asked (not even under the digits left), and the operator is
    told which line and why."""
    s = fx.build(tmp_path, registry_size=600, applicants=120,
                 grant={"kinds": ["cardinality"], "min_elements": 10})
    members = set(s.registry)
    numeric = [p for p in s.applicants if p in members and not p.endswith("X")][:3]
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["申请编号", "身份证号"])
    for i, p in enumerate(s.applicants):
        ws.append([f"A{i:05d}", float(int(p)) if p in numeric else p])
    wb.save(tmp_path / "applicants.xlsx")
    with s.fed:
        fx.start(s)
        fx.register(s)
        r = s.fed.cli("query", "cardinality", "--config", s.cfg("fund"), "--partner", "hrss",
                      "--dataset", "flexible_workers", "--purpose", fx.PURPOSE,
                      "--input", str(tmp_path / "applicants.xlsx"), "--id-column", "身份证号",
                      check=False)
    assert r.returncode == 0, r.stderr
    assert "57 of 117 distinct identifiers are in hrss.flexible_workers (exact)" in r.stdout
    assert "3 invalid rows not asked" in r.stdout
    assert r.stderr.count("identifier cell holds a number too large") == 3
