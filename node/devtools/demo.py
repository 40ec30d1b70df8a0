"""`shuqiao demo` / `make demo`: the seed's two identification jobs on three real nodes.

The fund centre (fund), the education bureau (edu) and the HRSS bureau (hrss) run as
separate `shuqiao serve` processes with a throwaway federation CA and mutual TLS. The
agencies register synthetic datasets through the CLI; the fund centre asks which of its
applicants are 2024-2026 graduates and which are registered flexible workers. Every
answer is checked against the generator's ground truth.
"""
from __future__ import annotations

import csv
import shutil
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from node.devtools.localnet import Federation
from node.devtools.synthetic import generate

PURPOSE_FLEX = "flexible-worker-deposit"
PURPOSE_GRAD = "graduate-housing-support"


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


def run_demo(*, workdir: Path | None, hrss_rows: int, graduates: int, applicants: int,
             seed: int, console: Console, out: Console) -> bool:
    started = time.perf_counter()
    root = workdir or Path(tempfile.mkdtemp(prefix="shuqiao-demo-"))
    try:
        with console.status("generating synthetic data"):
            data = generate(root / "data", hrss_rows=hrss_rows, graduates=graduates,
                            applicants=applicants, seed=seed)
        console.print(f"data: {hrss_rows} HRSS registry rows (GB18030 CSV), {graduates} graduates "
                      f"(UTF-8 BOM CSV), {applicants} applicants; overlaps {data.overlaps}")
        with Federation(root / "federation") as fed:
            _start_nodes(fed, console)
            _register(fed, data, console)
            ok = _ask(fed, data, root, console, out)
            ok &= _audit(fed, root, out)
    finally:
        if workdir is None:
            shutil.rmtree(root, ignore_errors=True)
    total = time.perf_counter() - started
    out.print(Text.assemble(("demo passed", "green") if ok else ("demo FAILED", "red"),
                            f" in {total:.0f} s"))
    return ok


def _start_nodes(fed: Federation, console: Console) -> None:
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
    console.print("nodes: " + ", ".join(f"{n.id}@{n.address}" for n in fed.nodes.values()))


def _register(fed: Federation, data, console: Console) -> None:
    for node, name, path, column in (
            ("hrss", "flexible_workers", data.hrss_csv, "公民身份号码"),
            ("edu", "graduates", data.graduates_csv, "身份证号")):
        t0 = time.perf_counter()
        with console.status(f"{node}: registering {name}"):
            r = fed.cli("dataset", "add", "--config", str(fed.nodes[node].config_path),
                        "--name", name, "--csv", str(path), "--id-column", column)
        console.print(f"{node}: {r.stdout.strip()} ({time.perf_counter() - t0:.1f} s)")


def _ask(fed: Federation, data, root: Path, console: Console, out: Console) -> bool:
    """The fund centre's two jobs, each checked against the ground truth; True if exact."""
    ok = True
    table = Table("job", "partner", "asked", "matched", "invalid", "time (s)", "check")
    for title, partner, name, purpose, truth in (
            ("2024-2026 graduates", "edu", "graduates", PURPOSE_GRAD, data.truth_graduate),
            ("flexible workers", "hrss", "flexible_workers", PURPOSE_FLEX, data.truth_flexible)):
        result = root / f"result-{name}.csv"
        t0 = time.perf_counter()
        with console.status(f"fund: asking {partner} ({title})"):
            r = fed.cli("query", "membership", "--config", str(fed.nodes["fund"].config_path),
                        "--partner", partner, "--dataset", name, "--purpose", purpose,
                        "--input", str(data.applicants_csv), "--id-column", "身份证号",
                        "--out", str(result), "--lang", "en", check=False)
        seconds = time.perf_counter() - t0
        if r.returncode != 0:
            console.print(Text.assemble(("query failed:", "red"), " ", r.stderr.strip()))
            ok = False
            continue
        rows, matched, problems = _check(result, truth, data.invalid_lines)
        invalid = sum(1 for _ in open(result.with_suffix(".rejected.csv"), encoding="utf-8-sig")) - 1
        good = not problems and invalid == len(data.invalid_lines) and matched == len(truth)
        ok &= good
        table.add_row(title, partner, str(rows), str(matched), str(invalid), f"{seconds:.1f}",
                      Text("exact", "green") if good else Text(f"{len(problems)} mismatches", "red"))
        for p in problems[:5]:
            console.print(Text(f"  {p}", "red"))
    out.print(table)
    return ok


def _audit(fed: Federation, root: Path, out: Console) -> bool:
    """What HRSS learnt (its query log), and an auditor's check of its exported ledger."""
    hrss = str(fed.nodes["hrss"].config_path)
    log = fed.cli("query", "log", "--config", hrss)
    out.print("HRSS query log (what the answering agency learnt):")
    out.print(log.stdout.rstrip())
    exported = root / "hrss-ledger.jsonl"
    fed.cli("audit", "export", "--config", hrss, "--out", str(exported))
    audit = fed.cli("audit", "verify", f"export:{exported}", "--ca", str(fed.pki / "ca.pem"),
                    "--state-dir", str(root / "auditor"), check=False)
    out.print("An auditor's check of HRSS's ledger, its key anchored in the federation CA:")
    out.print(audit.stdout.rstrip(), soft_wrap=True)
    return audit.returncode == 0
