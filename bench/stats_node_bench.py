"""Aggregate and threshold queries between real nodes at a million rows (JSON lines).

Two `shuqiao` nodes over mutual TLS on loopback; the agency registers 1,000,000 rows
(contribution base, one of 6 districts, monthly income) under a grant with both kinds,
which includes the per-epoch threshold preparation (one Paillier encryption and one
sealed label per usable row). Then, from the fund centre's process:

  stats_registration   the registration, split into reading + OPRF tags and the
                       threshold table (from the registration's own progress stages)
  stats_aggregate      sum, count, mean of contribution_base over 100,000 fund-centre
                       identifiers (half of them registered), grouped by district; first
                       query (the agency hashes its rows for the version) and second
  stats_threshold      1,000 applicants: the first query includes syncing the table
                       (about 0.8 GB: 3072-bit ciphertexts), the second is online only
  stats_threshold_refresh
                       a 1% refresh (only the added rows are encrypted), then 1,000
                       applicants, half of them added: the table syncs by difference

Results are checked against the plain computation: aggregates within the DP noise's
2^-64 tail bound, every threshold answer exactly.
"""
from __future__ import annotations

import os
import random
import time
from pathlib import Path

from adapters import IdType, encode

from .common import distinct_ids, emit, note, timer

PURPOSE = "benchmark"
DISTRICTS = ("天宁区", "钟楼区", "新北区", "武进区", "金坛区", "溧阳市")
AGG_TARGET_S, THRESHOLD_TARGET_S = 60.0, 20.0


def _peak_mb(pid: int | None = None) -> int:
    """Peak resident memory (VmHWM) of a process, in MiB: this one by default."""
    try:
        with open(f"/proc/{pid or 'self'}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) // 1024
    except OSError:
        pass
    return -1


def _write(path: Path, people, rng) -> dict[str, tuple[int, str, int]]:
    truth = {}
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,contribution_base,district,monthly_income\n")
        for p in people:
            row = (rng.randint(2_500, 40_000), rng.choice(DISTRICTS), rng.randint(2_000, 60_000))
            truth[p] = row
            f.write(f"{p},{row[0]},{row[1]},{row[2]}\n")
    return truth


def _federation(root: Path):
    from node.devtools.localnet import Federation
    fed = Federation(root)
    fed.add_node("agency", partners=[{"id": "fund"}], datasets=[{"name": "workers", "grants": [{
        "partner": "fund", "purposes": [PURPOSE], "kinds": ["aggregate", "threshold"],
        "aggregate_columns": ["contribution_base", "district"], "min_group_size": 10,
        "threshold_column": "monthly_income", "dp_epsilon": 1.0, "dp_budget": 1000.0,
        "aggregate_value_bound": 40_000}]}],
        grpc={"deadline_seconds": 3600, "max_batch_elements": 4096})
    fed.add_node("fund", partners=[{"id": "agency"}], grpc={"deadline_seconds": 3600})
    return fed


def _register(config_path: Path, csv_path: Path, out) -> None:
    """Register (the CLI's code path) in a child process, timing each progress stage."""
    from adapters import open_source
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    from node.datasets.registration import register
    stages: dict[str, list[float]] = {}

    def progress(stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        span = stages.setdefault(stage.split(" for ")[0], [now, now])
        span[1] = now

    ctx = NodeContext(load_config(config_path))
    try:
        with open_source(str(csv_path)) as source:
            t0 = time.perf_counter()
            register(ctx, "workers", source, id_column="id", id_type=IdType.CN_RESIDENT_ID,
                     attributes=["contribution_base", "district", "monthly_income"],
                     source_kind="csv", source_label=csv_path.name, progress=progress)
            total = time.perf_counter() - t0
    finally:
        ctx.close()
    table = stages.get("threshold table", [0.0, 0.0])
    out.put({"seconds": total, "threshold_table_seconds": table[1] - table[0],
             "peak_mb": _peak_mb()})


def _register_apart(config_path: Path, csv_path: Path) -> dict:
    import multiprocessing
    mp = multiprocessing.get_context("spawn")
    out = mp.Queue()
    child = mp.Process(target=_register, args=(config_path, csv_path, out))
    child.start()
    result = out.get()
    child.join()
    return result


def run(work: Path, *, quick: bool = False) -> None:
    from node.asker.statistics import aggregate, threshold
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    work.mkdir(parents=True, exist_ok=True)
    rows, asked_n, applicants_n = (20_000, 2_000, 100) if quick else (1_000_000, 100_000, 1_000)
    rng = random.Random(61)
    people = distinct_ids(rng, rows + asked_n // 2)
    registered, outsiders = people[:rows], people[rows:]
    note(f"stats: writing {rows} agency rows")
    truth = _write(work / "workers.csv", registered, rng)
    fed = _federation(work / "fed")
    with fed:
        note(f"stats: registering {rows} rows (tags and the threshold table)")
        reg = _register_apart(fed.nodes["agency"].config_path, work / "workers.csv")
        emit(bench="stats_registration", rows=rows, seconds=round(reg["seconds"], 1),
             threshold_table_seconds=round(reg["threshold_table_seconds"], 1),
             tags_and_storage_seconds=round(reg["seconds"] - reg["threshold_table_seconds"], 1),
             peak_mb=reg["peak_mb"], cpus=os.cpu_count())
        agency = fed.start("agency").process
        fed.set_partner_address("fund", "agency", fed.nodes["agency"].address)
        fund = NodeContext(load_config(fed.nodes["fund"].config_path))
        try:
            asked = rng.sample(registered, asked_n - len(outsiders)) + outsiders
            rng.shuffle(asked)
            enc = [encode(IdType.CN_RESIDENT_ID, x) for x in asked]
            plain: dict[str, list[int]] = {d: [0, 0] for d in DISTRICTS}
            for x in asked:
                if x in truth:
                    base, district, _ = truth[x]
                    plain[district][0] += 1
                    plain[district][1] += base
            for attempt in ("first", "second"):
                note(f"stats: aggregate {asked_n} x {rows} ({attempt})")
                with timer() as t:
                    r = aggregate(fund, "agency", "workers", PURPOSE, enc, value="contribution_base",
                                  ops=["sum", "mean", "count"], group_by="district")
                ok = all(abs(r.groups[d].count - c) <= r.count_noise_bound
                         and abs(r.groups[d].total - s) <= r.sum_noise_bound
                         for d, (c, s) in plain.items())
                emit(bench="stats_aggregate", query=attempt, asked=asked_n, rows=rows,
                     groups=len(r.groups), seconds=round(t["seconds"], 2),
                     target_seconds=AGG_TARGET_S, within_noise_bounds=ok, epsilon=r.epsilon,
                     agency_peak_mb=_peak_mb(agency.pid), fund_peak_mb=_peak_mb())
            applicants = rng.sample(registered, applicants_n * 9 // 10) + outsiders[:applicants_n // 10]
            limits = [rng.randint(2_000, 60_000) for _ in applicants]
            want = [None if x not in truth else truth[x][2] >= lim for x, lim in zip(applicants, limits)]
            enc = [encode(IdType.CN_RESIDENT_ID, x) for x in applicants]
            for attempt in ("first, with table sync", "second, online only"):
                note(f"stats: threshold {applicants_n} x {rows} ({attempt})")
                with timer() as t:
                    r = threshold(fund, "agency", "workers", PURPOSE, enc, limits)
                emit(bench="stats_threshold", query=attempt, applicants=applicants_n, rows=rows,
                     seconds=round(t["seconds"], 2), target_seconds=THRESHOLD_TARGET_S,
                     exact=r.answers == want, agency_peak_mb=_peak_mb(agency.pid),
                     fund_peak_mb=_peak_mb())
            # A 1% refresh: the agency encrypts only the added rows, the fund centre
            # receives only the difference of the threshold table.
            added = [x for x in distinct_ids(rng, rows // 100) if x not in truth]
            truth.update(_write(work / "added.csv", added, rng))
            note(f"stats: refreshing with {len(added)} added rows")
            with timer() as t:
                fed.cli("dataset", "update", "--config", str(fed.nodes["agency"].config_path),
                        "--name", "workers", "--id-column", "id", "--add", str(work / "added.csv"),
                        "--rejects", str(work / "added-rejected.csv"), timeout=3600)
            stages: dict[str, int] = {}
            applicants = applicants[:applicants_n // 2] + added[:applicants_n // 2]
            want = [truth[x][2] >= lim for x, lim in zip(applicants, limits)]
            with timer() as q:
                r = threshold(fund, "agency", "workers", PURPOSE,
                              [encode(IdType.CN_RESIDENT_ID, x) for x in applicants], limits,
                              progress=lambda stage, done, total: stages.__setitem__(stage, done))
            emit(bench="stats_threshold_refresh", rows=rows, added=len(added),
                 refresh_seconds=round(t["seconds"], 2), query_with_sync_seconds=round(q["seconds"], 2),
                 difference_rows=stages.get("table (difference)"), full_sync="table" in stages,
                 exact=r.answers == want)
        finally:
            fund.close()
