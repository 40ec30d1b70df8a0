"""`shuqiao demo` / `make demo`: the seed's two identification jobs on three real nodes.

The fund centre (fund), the education bureau (edu) and the HRSS bureau (hrss) run as
separate `shuqiao serve` processes with a throwaway federation CA and mutual TLS. The
agencies register synthetic datasets through the CLI; the fund centre asks which of its
applicants are 2024-2026 graduates and which are registered flexible workers. Every
answer is checked against the generator's ground truth.

It reports to a fund-centre officer, in lines of at most 80 characters: what was asked,
of whom, what came back, and what the agency learned (read from the agency's own query
log). Everything it made stays in the folder it names at the end (`demo-run/` by
default, a fresh `demo-run-N/` if that one is taken); nothing is deleted.
"""
from __future__ import annotations

import csv
import time
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from rich.cells import cell_len
from rich.console import Console
from rich.text import Text

from node.devtools.localnet import Federation
from node.devtools.synthetic import generate

PURPOSE_FLEX = "flexible-worker-deposit"
PURPOSE_GRAD = "graduate-housing-support"
WIDTH = 80
LABEL = 14  # the width of a field's label


@dataclass(frozen=True)
class Question:
    text: str
    partner: str
    partner_name: str
    dataset: str
    purpose: str
    truth: str  # the DemoData attribute holding the lines that should match
    found: str  # "are ..." for the ones that matched


QUESTIONS = (
    Question("Which applicants are 2024-2026 graduates?", "edu", "the education bureau (教育局)",
             "graduates", PURPOSE_GRAD, "truth_graduate", "are 2024-2026 graduates"),
    Question("Which applicants are registered flexible workers?", "hrss",
             "the HRSS bureau (人社局)", "flexible_workers", PURPOSE_FLEX, "truth_flexible",
             "are registered flexible workers"),
)


def _check(result_csv: Path, truth: set[int], invalid: set[int]) -> tuple[int, int, list[str]]:
    """(rows, matched, problems) of a result file against the ground truth."""
    problems, rows, matched = [], 0, 0
    with open(result_csv, newline="", encoding="utf-8-sig") as f:
        for row in csv.DictReader(f):  # written with --lang en
            line = int(row["line"])
            if (row["answer"] == "invalid") != (line in invalid):
                problems.append(f"line {line}: answered {row['answer']}, invalid {line in invalid}")
                continue
            if line in invalid:
                continue
            hit = row["answer"] == "yes"
            rows += 1
            matched += hit
            if hit != (line in truth):
                problems.append(f"line {line}: answered {hit}, truth {line in truth}")
    return rows, matched, problems


def _wrap(text: str, width: int) -> list[str]:
    """Words into lines of at most `width` terminal cells (a Chinese character takes two);
    a file name or a key is never broken."""
    lines, line = [], ""
    for word in text.split():
        longer = f"{line} {word}" if line else word
        if line and cell_len(longer) > width:
            lines.append(line)
            longer = word
        line = longer
    return lines + [line] if line else lines


def _say(out: Console, text: str, indent: int = 0) -> None:
    for line in _wrap(text, WIDTH - indent) or [""]:
        out.print(" " * indent + line, highlight=False, markup=False, soft_wrap=True)


def _field(out: Console, label: str, text: str) -> None:
    """`  label:       text`, the text wrapped under itself."""
    lines = _wrap(text, WIDTH - 2 - LABEL)
    for i, line in enumerate(lines):
        head = f"  {label + ':':<{LABEL}}" if i == 0 else " " * (2 + LABEL)
        out.print(head + line, highlight=False, markup=False, soft_wrap=True)


def default_workdir(base: Path = Path("demo-run")) -> Path:
    """`base` if it is free (absent or empty), else the first free `base-2`, `base-3`, ..."""
    candidate, n = base, 1
    while candidate.exists() and any(candidate.iterdir()):
        n += 1
        candidate = base.with_name(f"{base.name}-{n}")
    return candidate


def run_demo(*, workdir: Path | None, hrss_rows: int, graduates: int, applicants: int,
             seed: int, console: Console, out: Console) -> bool:
    started = time.perf_counter()
    root = (workdir or default_workdir()).resolve()
    root.mkdir(parents=True, exist_ok=True)
    _say(out, "Shuqiao demo: the housing provident fund centre (fund) asks two agencies "
              "about its applicants, without handing them the list and without seeing "
              "their registers.")
    with console.status("generating synthetic data"):
        data = generate(root / "data", hrss_rows=hrss_rows, graduates=graduates,
                        applicants=applicants, seed=seed)
    out.print()
    _say(out, f"Setting up (synthetic people, seed {seed}):")
    _field(out, "fund", f"{data.overlaps['applicants']:,} applicants, "
                        f"{data.overlaps['invalid']:,} with an invalid ID number")
    _field(out, "edu", f"a roll of {graduates:,} graduates")
    _field(out, "hrss", f"a register of {hrss_rows:,} flexible workers")
    with Federation(root / "federation") as fed:
        _start_nodes(fed, console, out)
        _register(fed, data, console, out)
        ok = _ask(fed, data, root, console, out)
        ok &= _audit(fed, root, out)
    out.print()
    _say(out, f"Everything this run made is kept in {root}: the data, the three nodes' "
              "configs, logs and databases, the result files and HRSS's ledger export.")
    total = time.perf_counter() - started
    out.print(Text.assemble(("demo passed", "green") if ok else ("demo FAILED", "red"),
                            f" in {total:.0f} s"))
    return ok


def _start_nodes(fed: Federation, console: Console, out: Console) -> None:
    """The two agencies, each granting the fund centre one purpose, and the fund centre."""
    fed.add_node("edu", partners=[{"id": "fund", "display_name": "住房公积金管理中心"}],
                 datasets=[{"name": "graduates", "description": "2024-2026 graduates",
                            "grants": [{"partner": "fund", "purposes": [PURPOSE_GRAD]}]}])
    fed.add_node("hrss", partners=[{"id": "fund", "display_name": "住房公积金管理中心"}],
                 datasets=[{"name": "flexible_workers",
                            "description": "registered flexible workers",
                            "grants": [{"partner": "fund", "purposes": [PURPOSE_FLEX]}]}])
    fed.add_node("fund", partners=[{"id": "edu", "display_name": "教育局"},
                                   {"id": "hrss", "display_name": "人社局"}])
    with console.status("starting three nodes (mTLS, ephemeral ports)"):
        for n in ("edu", "hrss"):
            fed.start(n)
            fed.set_partner_address("fund", n, fed.nodes[n].address)
        fed.start("fund")
    _field(out, "nodes", "three processes on this machine, talking over mutual TLS: "
                         + ", ".join(f"{n.id} on port {n.port}" for n in fed.nodes.values()))


def _register(fed: Federation, data, console: Console, out: Console) -> None:
    for node, name, path, column in (
            ("edu", "graduates", data.graduates_csv, "身份证号"),
            ("hrss", "flexible_workers", data.hrss_csv, "公民身份号码")):
        t0 = time.perf_counter()
        with console.status(f"{node}: registering {name}"):
            fed.cli("dataset", "add", "--config", str(fed.nodes[node].config_path),
                    "--name", name, "--csv", str(path), "--id-column", column)
        _field(out, node, f"registered its file as dataset {name} "
                          f"({time.perf_counter() - t0:.1f} s)")


def _newest(fed: Federation, node: str, query: str, **params) -> dict:
    """The first row of `query` on a node's database (its own records, read as they are)."""
    engine = sa.create_engine(f"sqlite:///{fed.nodes[node].directory / 'node.db'}")
    try:
        with engine.connect() as conn:
            row = conn.execute(sa.text(query), params).first()
    finally:
        engine.dispose()
    return dict(row._mapping) if row else {}


def _last_record(fed: Federation, node: str, role: str) -> dict:
    """The newest row of a node's query log in `role` (metadata only, as the node keeps it)."""
    return _newest(fed, node, "SELECT elements, purpose, started_at FROM query_log "
                              "WHERE role = :role ORDER BY seq DESC LIMIT 1", role=role)


def _ask(fed: Federation, data, root: Path, console: Console, out: Console) -> bool:
    """The fund centre's two questions, each checked against the ground truth; True if exact."""
    ok = True
    for q in QUESTIONS:
        result = root / f"result-{q.dataset}.csv"
        t0 = time.perf_counter()
        with console.status(f"fund: asking {q.partner} ({q.text})"):
            r = fed.cli("query", "membership", "--config", str(fed.nodes["fund"].config_path),
                        "--partner", q.partner, "--dataset", q.dataset, "--purpose", q.purpose,
                        "--input", str(data.applicants_csv), "--id-column", "身份证号",
                        "--out", str(result), "--lang", "en", check=False)
        seconds = time.perf_counter() - t0
        out.print()
        _say(out, q.text)
        if r.returncode != 0:
            _field(out, "failed", r.stderr.strip())
            ok = False
            continue
        truth = getattr(data, q.truth)
        rows, matched, problems = _check(result, truth, data.invalid_lines)
        invalid = sum(1 for _ in open(result.with_suffix(".rejected.csv"), encoding="utf-8-sig")) - 1
        good = not problems and invalid == len(data.invalid_lines) and matched == len(truth)
        ok &= good
        _report(out, q, fed, rows, matched, invalid, seconds, result)
        _field(out, "checked", "every answer matches the generator's truth" if good else
               f"{len(problems)} answers DIFFER from the generator's truth")
        for p in problems[:5]:
            _say(out, p, 4)
    return ok


def _report(out: Console, q: Question, fed: Federation, rows: int, matched: int,
            invalid: int, seconds: float, result: Path) -> None:
    asked = _last_record(fed, "fund", "asker").get("elements", 0)
    seen = _last_record(fed, q.partner, "answerer")
    _field(out, "asked of", f"{q.partner}, {q.partner_name}: dataset {q.dataset}, for "
                            f"purpose {q.purpose}")
    _field(out, "sent", f"{asked:,} distinct ID numbers, each blinded first: {q.partner} "
                        "never sees one in the clear")
    _field(out, "came back", f"{matched:,} of the {rows:,} applicant rows {q.found}, "
                             f"{rows - matched:,} are not; {invalid:,} rows with an invalid "
                             f"ID number were not asked ({seconds:.1f} s)")
    when = str(seen.get("started_at", ""))[11:19]  # the time of day it recorded (UTC)
    _field(out, f"{q.partner} learned",
           f"that fund asked {seen.get('elements', 0):,} numbers for {seen.get('purpose', '?')}"
           + (f" at {when} UTC" if when else "") + "; not who they are, nor which of them "
           "matched (its query log holds just that)")
    size = _newest(fed, "fund", "SELECT row_count FROM peer_tag_tables WHERE partner = :p "
                                "ORDER BY id DESC LIMIT 1", p=q.partner).get("row_count", 0)
    _field(out, "fund learned", f"which of its applicants {q.found}, and that {q.dataset} "
                                f"holds {size:,} people (fund keeps its blinded tags to match "
                                "against, never a name or number)")
    _field(out, "result file", f"{result.name} (and {result.with_suffix('.rejected.csv').name} "
                               "for the invalid rows)")


def _audit(fed: Federation, root: Path, out: Console) -> bool:
    """An auditor's check of HRSS's exported ledger, its key anchored in the federation CA."""
    hrss = str(fed.nodes["hrss"].config_path)
    exported = root / "hrss-ledger.jsonl"
    fed.cli("audit", "export", "--config", hrss, "--out", str(exported))
    audit = fed.cli("audit", "verify", f"export:{exported}", "--ca", str(fed.pki / "ca.pem"),
                    "--state-dir", str(root / "auditor"), check=False)
    out.print()
    _say(out, "An auditor checks HRSS's ledger (every query it answered, as metadata), its "
              "signing key anchored in the federation's CA:")
    for line in audit.stdout.strip().splitlines():
        _say(out, line.strip(), 2)
    return audit.returncode == 0
