"""Real-time checks: the latency of `POST /v1/checks` over HTTPS between real nodes (JSON lines).

Two `shuqiao serve` processes on loopback (mutual TLS between them): an agency holding a
dataset of 1,000,000 synthetic rows (``--quick``: 20,000), and a fund centre serving the
service API over HTTPS with an operator token and a rule file. A business system (this
process) keeps one HTTPS connection open, as a connection pool would, and posts one
applicant per request with a fresh ``Idempotency-Key``, waiting for each answer.

  realtime_setup     registering the agency's rows (tag table included), the first check
                     (which syncs the agency's tag table to the fund centre), and the
                     fund centre's resident memory once the table is held
  realtime_check     per mode after a warm-up, with the tag table cached: ``query`` (one
                     partner query, membership) and ``rule`` (a rule with a local term,
                     ``agency.roll and age < 60``): p50/p95/p99/max latency in ms over
                     the measured checks, checks per second, whether every decision
                     equals the ground truth, and the CPU each check costs the fund
                     centre, the agency (each node's processes) and the client; ``concurrency`` > 1 repeats it with that
                     many business-system threads at once
  realtime_peer      the peers (OpenMined PSI, SecretFlow PSI) have no real-time mode: each
                     run is a whole two-party PSI session over both sets, so there is no
                     per-applicant figure to put beside these

The target is p99 < 100 ms at concurrency 1 on the project's 2-core machine. The machine is
shared: read the load average each line carries, and the CPU figures, which other work on
the machine does not inflate as it does latencies.
"""
from __future__ import annotations

import os
import random
import ssl
import statistics
import threading
import time
import uuid
from pathlib import Path

from adapters import synthetic_resident_id

from .common import distinct_ids, emit, note, timer, write_ids

PURPOSE = "benchmark"
RULES = """
[rules]
roll_under_60 = 'agency.roll and age < 60'

[purposes]
roll_under_60 = "benchmark"
"""


def _federation(root: Path, rows: int, token_digest: str):
    from node.devtools.localnet import Federation
    fed = Federation(root)
    grpc = {"deadline_seconds": 600, "max_query_elements": max(rows, 1_000_000)}
    fed.add_node("agency", partners=[{"id": "fund"}], grpc=grpc, datasets=[{"name": "roll", "grants": [
        {"partner": "fund", "purposes": [PURPOSE], "max_elements": max(rows, 1_000_000)}]}])
    (root / "rules.toml").write_text(RULES, encoding="utf-8")
    fed.add_node("fund", partners=[{"id": "agency"}], grpc=grpc, extra={
        "http": {"listen": "127.0.0.1:0", "tokens": [
            {"name": "business-system", "digest": token_digest, "role": "operator",
             "requests_per_minute": 100_000}]},
        "service": {"rules_file": str(root / "rules.toml")}})
    return fed


def _percentile(sorted_ms: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    k = max(0, min(len(sorted_ms) - 1, int(round(p / 100 * len(sorted_ms) + 0.5)) - 1))
    return round(sorted_ms[k], 2)


def _body(mode: str, identifier: str) -> dict:
    if mode == "rule":
        return {"identifier": identifier, "columns": {"age": "40"}, "rule": "roll_under_60", "lang": "en"}
    return {"identifier": identifier, "lang": "en",
            "query": {"partner": "agency", "dataset": "roll", "purpose": PURPOSE}}


class _Business:
    """One business system's connection to the fund centre's service API."""

    def __init__(self, port: int, ca: Path, token: str) -> None:
        import httpx
        self.client = httpx.Client(base_url=f"https://127.0.0.1:{port}", timeout=60,
                                   verify=ssl.create_default_context(cafile=str(ca)),
                                   headers={"Authorization": f"Bearer {token}"})

    def check(self, mode: str, identifier: str) -> tuple[float, bool | None]:
        t0 = time.perf_counter()
        r = self.client.post("/v1/checks", json=_body(mode, identifier),
                             headers={"Idempotency-Key": str(uuid.uuid4())})
        elapsed = time.perf_counter() - t0
        if r.status_code != 200:
            raise RuntimeError(f"check failed: HTTP {r.status_code} {r.text[:200]}")
        return elapsed, r.json()["eligible"]

    def close(self) -> None:
        self.client.close()


def _measure(connect, mode: str, asked: list[str], members: set[str], concurrency: int,
             nodes: dict[str, int]) -> dict:
    latencies: list[float] = []
    wrong = []
    lock = threading.Lock()
    parts = [asked[i::concurrency] for i in range(concurrency)]

    def run(part: list[str]) -> None:
        business = connect()
        try:
            for identifier in part:
                seconds, eligible = business.check(mode, identifier)
                with lock:
                    latencies.append(seconds * 1000)
                    if eligible is not (identifier in members):
                        wrong.append(1)
        finally:
            business.close()

    cpu0 = {name: _group_cpu_seconds(pgid) for name, pgid in nodes.items()}
    client0, t0 = time.process_time(), time.perf_counter()
    threads = [threading.Thread(target=run, args=(p,)) for p in parts]
    [t.start() for t in threads]
    [t.join() for t in threads]
    wall, client = time.perf_counter() - t0, time.process_time() - client0
    cpu = {f"{name}_cpu_ms_per_check": round((_group_cpu_seconds(pgid) - cpu0[name]) * 1000 / len(asked), 2)
           for name, pgid in nodes.items()}
    ms = sorted(latencies)
    return {"checks": len(ms), "p50_ms": _percentile(ms, 50), "p95_ms": _percentile(ms, 95),
            "p99_ms": _percentile(ms, 99), "max_ms": round(ms[-1], 2),
            "mean_ms": round(statistics.fmean(ms), 2), "checks_per_second": round(len(ms) / wall, 1),
            "correct": not wrong and len(ms) == len(asked), **cpu,
            "client_cpu_ms_per_check": round(client * 1000 / len(asked), 2)}


def _group_cpu_seconds(pgid: int) -> float:
    """User + system CPU so far of every live process in a node's process group (the
    `serve` process and its crypto workers)."""
    total, tick = 0.0, os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def run(work: Path, *, quick: bool = False) -> None:
    from node.ledger.http import new_token
    work.mkdir(parents=True, exist_ok=True)
    rows = 20_000 if quick else 1_000_000
    measured, warm = (200, 20) if quick else (1000, 50)
    rng = random.Random(2026)
    server_csv = work / f"roll_{rows}.csv"
    registered = work / f"fed_{rows}" / "registered"  # kept with --work: a rerun measures only
    if registered.exists() and server_csv.exists():
        server_ids = server_csv.read_text(encoding="utf-8").split()[1:]
    else:
        registered.unlink(missing_ok=True)
        server_ids = distinct_ids(rng, rows)
        write_ids(server_csv, server_ids)
    members = set(rng.sample(server_ids, (measured + warm) // 2))
    held, outsiders = set(server_ids), set()
    while len(outsiders) < measured + warm - len(members):  # people the agency does not hold
        candidate = synthetic_resident_id(rng)
        if candidate not in held:
            outsiders.add(candidate)
    asked = sorted(members) + sorted(outsiders)
    rng.shuffle(asked)
    token, digest = new_token()
    fed = _federation(work / f"fed_{rows}", rows, digest)
    with fed:
        with timer() as registration:
            if not registered.exists():
                note(f"realtime: registering {rows} rows")
                fed.cli("dataset", "add", "--config", str(fed.nodes["agency"].config_path), "--name", "roll",
                        "--csv", str(server_csv), "--id-column", "id", timeout=7200)
                registered.touch()
        fed.start("agency")
        fed.set_partner_address("fund", "agency", fed.nodes["agency"].address)
        fund = fed.start("fund")
        nodes = {"fund": fund.process.pid, "agency": fed.nodes["agency"].process.pid}  # group leaders

        def connect() -> _Business:
            return _Business(fund.http_port, fed.pki / "ca.pem", token)

        business = connect()
        try:
            note("realtime: first check (syncs the tag table)")
            first, _ = business.check("query", asked[0])
            for identifier in asked[1:warm]:  # warm-up: both modes, every code path loaded
                business.check("query", identifier)
                business.check("rule", identifier)
        finally:
            business.close()
        emit(bench="realtime_setup", rows=rows, registration_seconds=round(registration["seconds"], 1),
             registered_before=registration["seconds"] < 1,
             first_check_seconds=round(first, 3), fund_rss_mb=_rss_mb(fund.process.pid),
             load_average=os.getloadavg()[0])
        for mode in ("query", "rule"):
            note(f"realtime: {measured} checks, {mode}")
            figures = _measure(connect, mode, asked[warm:], members, 1, nodes)
            emit(bench="realtime_check", mode=mode, against=rows, concurrency=1, target_p99_ms=100,
                 **figures, load_average=os.getloadavg()[0])
        note("realtime: concurrency 4")
        figures = _measure(connect, "query", asked[warm:], members, 4, nodes)
        emit(bench="realtime_check", mode="query", against=rows, concurrency=4, **figures,
             load_average=os.getloadavg()[0])
    emit(bench="realtime_peer", systems=["openmined-psi", "secretflow-psi"], comparable=False,
         note="no real-time mode in the peers: each run is a whole PSI session over both sets "
              "(see the membership and bulk lines for their batch figures)")
