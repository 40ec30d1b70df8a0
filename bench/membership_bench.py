"""Membership PSI benchmarks: ours through two real nodes, the peers on the same files.

Measurements (JSON lines):
  scalarmult_rate      ristretto255 scalar multiplications per second on all cores
  membership           100k x 100k through two `shuqiao serve`-equivalent nodes (gRPC,
                       mTLS, loopback): registration (tag table), sync, online query
  peer                 OpenMined PSI and SecretFlow PSI on the same CSVs (if installed)
  registration_1m      registering 1,000,000 rows, tag table included, vs the bound
                       rows / scalarmult_rate
  online_query         1 and 10,000 identifiers against the registered million
"""
from __future__ import annotations

import json
import multiprocessing
import os
import random
import subprocess
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

from adapters import IdType, encode, open_csv

from .common import PEERS_VENV, SHARED, emit, note, timer, two_sets, write_ids

PURPOSE = "benchmark"


def _scalarmult_loop(n: int) -> float:
    import rbcl
    p = rbcl.crypto_core_ristretto255_from_hash(os.urandom(64))
    k = rbcl.crypto_core_ristretto255_scalar_random()
    sm = rbcl.crypto_scalarmult_ristretto255
    t0 = time.perf_counter()
    for _ in range(n):
        p = sm(k, p)
    return time.perf_counter() - t0


def scalarmult_rate(per_core: int = 40_000) -> float:
    cores = os.cpu_count() or 1
    with ProcessPoolExecutor(cores, mp_context=multiprocessing.get_context("spawn")) as ex:
        list(ex.map(_scalarmult_loop, [1000] * cores))  # warm up
        t0 = time.perf_counter()
        list(ex.map(_scalarmult_loop, [per_core] * cores))
        wall = time.perf_counter() - t0
    rate = per_core * cores / wall
    emit(bench="scalarmult_rate", cores=cores, per_second=round(rate))
    return rate


def _federation(root: Path):
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    from node.devtools.localnet import Federation
    fed = Federation(root)
    fed.add_node("agency", partners=[{"id": "fund"}],
                 datasets=[{"name": "roll", "grants": [{"partner": "fund", "purposes": [PURPOSE]}]}])
    fed.add_node("fund", partners=[{"id": "agency"}])
    fed.start("agency")
    fed.set_partner_address("fund", "agency", fed.nodes["agency"].address)
    return fed, NodeContext(load_config(fed.nodes["fund"].config_path))


def _register(fed, csv_path: Path) -> float:
    with timer() as t:
        fed.cli("dataset", "add", "--config", str(fed.nodes["agency"].config_path), "--name", "roll",
                "--csv", str(csv_path), "--id-column", "id", timeout=3600)
    return t["seconds"]


def _ask(fund_ctx, ids: list[str]):
    from node.asker import membership as asker
    inputs = [encode(IdType.CN_RESIDENT_ID, x) for x in ids]
    with timer() as t:
        result = asker.membership(fund_ctx, "agency", "roll", PURPOSE, inputs)
    return t["seconds"], int(result.matched.sum())


def peers(client_csv: Path, server_csv: Path, systems: str) -> None:
    python = PEERS_VENV / "bin" / "python"
    script = SHARED / "bench" / "peers.py"
    if not python.exists() or not script.exists():
        emit(bench="peer", skipped=f"peer venv missing at {PEERS_VENV}; run ../shared/bench/setup-peers.sh")
        return
    for system in systems.split(","):
        note(f"peer {system}")
        r = subprocess.run([str(python), str(script), "--client", str(client_csv), "--server",
                            str(server_csv), "--column", "id", "--systems", system],
                           capture_output=True, text=True, timeout=1800)
        lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
        if r.returncode != 0 or not lines:
            emit(bench="peer", system=system, error=(r.stderr.strip().splitlines() or ["failed"])[-1])
            continue
        for line in lines:
            emit(bench="peer", **json.loads(line))


def membership_100k(work: Path, n: int, peer_systems: str) -> None:
    rng = random.Random(100)
    client_ids, server_ids = two_sets(rng, n, n)
    client_csv = write_ids(work / f"client_{n}.csv", client_ids)
    server_csv = write_ids(work / f"server_{n}.csv", server_ids)
    fed, fund = _federation(work / f"fed_{n}")
    try:
        note(f"ours: {n} x {n}")
        registration = _register(fed, server_csv)
        first, matched = _ask(fund, client_ids)        # includes the tag-table sync
        second, matched2 = _ask(fund, client_ids)      # table cached: online cost only
        emit(bench="membership", system="shuqiao", client=n, server=n, intersection=matched,
             registration_seconds=round(registration, 3), first_query_seconds=round(first, 3),
             online_query_seconds=round(second, 3),
             seconds=round(registration + first, 3), correct=matched == matched2 == n // 2)
    finally:
        fund.close()
        fed.close()
    peers(client_csv, server_csv, peer_systems)


def million(work: Path, rows: int, rate: float) -> None:
    rng = random.Random(1_000_000)
    asked, server_ids = two_sets(rng, 10_000, rows)
    server_csv = write_ids(work / f"server_{rows}.csv", server_ids)
    fed, fund = _federation(work / f"fed_{rows}")
    try:
        note(f"registering {rows} rows")
        seconds = _register(fed, server_csv)
        bound = rows / rate
        emit(bench="registration", rows=rows, seconds=round(seconds, 3),
             bound_seconds=round(bound, 3), ratio_to_bound=round(seconds / bound, 3), target_ratio=1.3)
        sync, _ = _ask(fund, asked[:1])
        emit(bench="tag_table_sync", rows=rows, seconds_including_one_query=round(sync, 3))
        for size in (1, 10_000):
            times = []
            for _ in range(5 if size == 1 else 2):
                t, matched = _ask(fund, asked[:size])
                times.append(t)
            emit(bench="online_query", against=rows, asked=size, matched=matched,
                 best_ms=round(min(times) * 1000, 1), median_ms=round(sorted(times)[len(times) // 2] * 1000, 1))
    finally:
        fund.close()
        fed.close()


def run(work: Path, *, quick: bool = False, peer_systems: str = "openmined,sf-ecdh,sf-kkrt,sf-rr22") -> None:
    work.mkdir(parents=True, exist_ok=True)
    rate = scalarmult_rate(5_000 if quick else 40_000)
    membership_100k(work, 5_000 if quick else 100_000, peer_systems)
    million(work, 20_000 if quick else 1_000_000, rate)
