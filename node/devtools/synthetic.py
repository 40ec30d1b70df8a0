"""Synthetic but realistic agency data for the demo, tests and benchmarks.

People carry valid resident ids (check digit, birth date, Changzhou-first region
codes). The generator records its ground truth so every answer can be checked.
Applicant lists contain the kinds of dirt an operator meets: 15-digit legacy ids,
lowercase x, full-width digits, stray spaces, and some invalid ids.
"""
from __future__ import annotations

import csv
import random
from dataclasses import dataclass, field
from pathlib import Path

from adapters import IdType, normalise, synthetic_resident_id

DISTRICTS = ["天宁区", "钟楼区", "新北区", "武进区", "金坛区", "溧阳市"]
SCHOOLS = ["常州大学", "江苏理工学院", "常州工学院", "河海大学常州校区", "常州信息职业技术学院"]
DEGREES = ["专科", "本科", "硕士", "博士"]


@dataclass
class Population:
    people: list[str]                       # normalised 18-digit ids, distinct
    flexible_workers: set[str] = field(default_factory=set)
    graduates: set[str] = field(default_factory=set)


def make_population(rng: random.Random, size: int) -> list[str]:
    seen: set[str] = set()
    while len(seen) < size:
        seen.add(synthetic_resident_id(rng, birth_year_range=(1965, 2004)))
    return sorted(seen)


def _dirty(rng: random.Random, rid: str) -> str:
    """The same person as an operator's spreadsheet might hold them."""
    r = rng.random()
    if r < 0.03 and rid[6:8] == "19" and rid[17].isdigit():
        return rid[:6] + rid[8:17]                            # 15-digit legacy form
    if r < 0.06:
        return rid.translate(str.maketrans("0123456789X", "０１２３４５６７８９Ｘ"))
    if r < 0.08:
        return f"  {rid.lower()} "
    return rid


def _corrupt(rng: random.Random, rid: str) -> str:
    i = rng.randrange(17)
    d = str((int(rid[i]) + rng.randrange(1, 10)) % 10)
    return rid[:i] + d + rid[i + 1:]


def write_csv(path: Path, header: list[str], rows, encoding: str = "utf-8") -> None:
    with open(path, "w", newline="", encoding=encoding) as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


@dataclass
class DemoData:
    hrss_csv: Path
    graduates_csv: Path
    applicants_csv: Path
    truth_flexible: set[int]     # applicant line numbers that are flexible workers
    truth_graduate: set[int]     # applicant line numbers that are 2024-2026 graduates
    invalid_lines: set[int]
    overlaps: dict[str, int]


def generate(directory: Path, *, hrss_rows: int, graduates: int, applicants: int,
             seed: int) -> DemoData:
    """Write the three agencies' files; return the ground truth of both identification jobs."""
    rng = random.Random(seed)
    directory.mkdir(parents=True, exist_ok=True)
    pool = make_population(rng, hrss_rows + graduates + applicants)
    rng.shuffle(pool)
    hrss = pool[:hrss_rows]
    # Graduates are young: a third of them also work flexibly and appear in the registry.
    grads = pool[hrss_rows - graduates // 3: hrss_rows - graduates // 3 + graduates]
    outsiders = pool[hrss_rows + graduates:]
    hrss_set, grad_set = set(hrss), set(grads)

    write_csv(directory / "hrss_flexible_workers.csv",
              ["公民身份号码", "参保状态", "缴费月数", "所属区"],
              ((p, rng.choice(["正常参保", "正常参保", "正常参保", "暂停缴费"]),
                rng.randint(1, 96), rng.choice(DISTRICTS)) for p in hrss),
              encoding="gb18030")   # what Excel in China writes
    write_csv(directory / "edu_graduates.csv",
              ["身份证号", "毕业年份", "毕业院校", "学历"],
              ((p, rng.choice([2024, 2025, 2026]), rng.choice(SCHOOLS), rng.choice(DEGREES))
               for p in grads), encoding="utf-8-sig")

    # Applicants: 35% registry members, 30% graduates (overlapping), the rest outsiders.
    picks = (rng.sample(hrss, int(applicants * 0.35)) + rng.sample(grads, int(applicants * 0.30)))
    picks = list(dict.fromkeys(picks))
    picks += outsiders[: applicants - len(picks)]
    rng.shuffle(picks)
    rows, flex, grad, bad = [], set(), set(), set()
    for i, p in enumerate(picks):
        line = i + 2
        if rng.random() < 0.005:
            rows.append((f"SQ{i:06d}", _corrupt(rng, p), rng.choice(DISTRICTS)))
            bad.add(line)
            continue
        raw = _dirty(rng, p)
        assert normalise(IdType.CN_RESIDENT_ID, raw) == p
        rows.append((f"SQ{i:06d}", raw, rng.choice(DISTRICTS)))
        if p in hrss_set:
            flex.add(line)
        if p in grad_set:
            grad.add(line)
    write_csv(directory / "applicants.csv", ["申请编号", "身份证号", "户籍所在区"], rows)
    return DemoData(directory / "hrss_flexible_workers.csv", directory / "edu_graduates.csv",
                    directory / "applicants.csv", flex, grad, bad,
                    {"applicants": len(rows), "flexible_workers": len(flex), "graduates": len(grad),
                     "both": len(flex & grad), "invalid": len(bad),
                     "registry_graduate_overlap": len(hrss_set & grad_set)})
