"""One reader for the operator's input lists: every command refuses the same rows.

An 18-digit 身份证号 typed into a General-format Excel cell is stored as a number with 15
significant digits: the file no longer holds the person's identifier. Such a row must be
refused with that reason by every command that reads an applicant list, never asked
about under whatever the rounded digits happen to spell (another person, or nobody).
"""
from __future__ import annotations

import random

import openpyxl
import pytest

from adapters import IdType, SourceError, open_csv, open_xlsx, read_applicants, synthetic_resident_id
from adapters.reader import INEXACT_NUMBER_REASON
from node.core.config import load_config
from node.datasets.registration import register
from node.devtools.localnet import Federation
from node.devtools.synthetic import write_csv
from node.policy.consent import applicant_pairs
from node.rules.rulefile import load_rule_file
from node.rules.runner import run_rule
from node.runtime.context import NodeContext


def _applicants_xlsx(path, people: list[str], as_number: set[str]) -> None:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(["申请编号", "身份证号"])
    for i, p in enumerate(people):
        ws.append([f"A{i:03d}", float(int(p)) if p in as_number else p])
    wb.save(path)


@pytest.fixture
def people():
    """Five applicants; the last one's identifier is typed into the workbook as a number."""
    rng = random.Random(5)
    everyone = [synthetic_resident_id(rng) for _ in range(5)]
    while everyone[-1].endswith("X"):  # a number cannot end in X
        everyone[-1] = synthetic_resident_id(rng)
    return everyone, everyone[-1]


def test_rows_are_asked_or_refused_with_a_reason(tmp_path, people):
    everyone, exact = people
    _applicants_xlsx(tmp_path / "in.xlsx", everyone, {exact})
    with open_xlsx(tmp_path / "in.xlsx") as source:
        rows = list(read_applicants(source, "身份证号", IdType.CN_RESIDENT_ID, auth_column="申请编号"))
    assert [r.reason for r in rows] == [""] * 4 + [INEXACT_NUMBER_REASON]
    assert rows[-1].identifier == b"" and rows[-1].normalised_id == ""
    assert [r.reference for r in rows[:4]] == ["A000", "A001", "A002", "A003"]
    path = tmp_path / "in.csv"
    write_csv(path, ["申请编号", "身份证号"], [["", everyone[0]], ["B1", "not an id"], ["B2", everyone[1]]])
    with open_csv(path) as source:
        rows = list(read_applicants(source, "身份证号", IdType.CN_RESIDENT_ID, auth_column="申请编号"))
    assert [r.reason for r in rows] == ["missing authorisation reference", "invalid character", ""]
    with open_csv(path) as source, pytest.raises(SourceError, match="'年龄' not found"):
        read_applicants(source, "身份证号", IdType.CN_RESIDENT_ID, columns=["年龄"])


def test_the_consent_audit_leaves_out_lost_digits(tmp_path, people):
    everyone, exact = people
    _applicants_xlsx(tmp_path / "in.xlsx", everyone, {exact})
    with open_xlsx(tmp_path / "in.xlsx") as source:
        pairs = applicant_pairs(source, "身份证号", "申请编号", IdType.CN_RESIDENT_ID)
    assert len(pairs) == 4 and all(exact.encode() not in i for i, _ in pairs)


RULES = """
[rules]
known = 'fund.depositors'
"""


def test_a_rule_refuses_an_identifier_that_lost_digits(tmp_path, people):
    """A local-only rule: every applicant is a depositor, so any decided row is eligible."""
    everyone, exact = people
    fed = Federation(tmp_path / "fed")
    fed.add_node("fund", partners=[{"id": "hrss"}], datasets=[{"name": "depositors"}])
    write_csv(tmp_path / "depositors.csv", ["sfzh"], [[p] for p in everyone])
    _applicants_xlsx(tmp_path / "in.xlsx", everyone, {exact})
    (tmp_path / "rules.toml").write_text(RULES, encoding="utf-8")
    with NodeContext(load_config(fed.nodes["fund"].config_path)) as ctx:
        with open_csv(tmp_path / "depositors.csv") as src:
            register(ctx, "depositors", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                     source_kind="csv", source_label="depositors")
        with open_xlsx(tmp_path / "in.xlsx") as source:
            run = run_rule(ctx, load_rule_file(tmp_path / "rules.toml"), "known", source,
                           id_column="身份证号", id_type=IdType.CN_RESIDENT_ID)
    assert [d[2] for d in run.decisions] == [True] * 4 + [None]
    assert INEXACT_NUMBER_REASON in run.decisions[-1][3]
    assert "位数已丢失" in run.decisions[-1][3]
    assert (run.asked, run.counts["undetermined"]) == (4, 1)
