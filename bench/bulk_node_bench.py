"""The bulk query kind between two real nodes, on the bulk benchmark's CSVs (JSON lines).

Per size (100k x 100k and 1M x 1M; ``--quick``: 5k and 20k), a fresh federation of two
``shuqiao`` nodes over mutual TLS on loopback: the agency registers the server CSV
through the CLI (``bulk_node_registration``: tag tables included, reported apart), then
the fund centre asks the client CSV with ``query membership --kind bulk``'s code path
(``node/jobs/files.py``) in a spawned process, cold: no cache on either side.

  bulk_node          seconds from opening the applicant list to the written result
                     file (``read_input_seconds`` of it reading and normalising the list,
                     ``query_seconds`` the query); per-side stage times (the fund centre's
                     from its log record, the agency's from its serve.log line; ``wait``
                     is time blocked on the peer), CPU seconds and peak resident
                     memory (VmHWM) of the fund centre's process and of the agency's
                     ``shuqiao serve`` process; the intersection's digest
  bulk_node_crossover  (the largest size only) membership and bulk queries of a few
                     list sizes against the same registered dataset, the membership
                     kind with the partner's tag table already synced: where bulk
                     becomes faster (node/asker/bulk.py's hint)

bench/bulk_bench.py runs this next to the engine alone and SecretFlow on the same CSVs
and compares all intersections. The machine is shared: read ``cpu_seconds`` next to
wall times, and the load average each line carries.
"""
from __future__ import annotations

import ast
import hashlib
import multiprocessing
import os
import re
import time
from pathlib import Path

from .common import emit, note

PURPOSE = "benchmark"
DATASET = "registry"


def _peak_mb(pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    return -1.0


def _cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (and its reaped children) so far, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return sum(int(x) for x in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def _federation(root: Path, n: int):
    from node.devtools.localnet import Federation
    fed = Federation(root)
    grpc = {"deadline_seconds": 3600, "max_query_elements": max(n, 1_000_000), "idle_seconds": 600}
    fed.add_node("agency", partners=[{"id": "fund"}], grpc=grpc, datasets=[{"name": DATASET, "grants": [{
        "partner": "fund", "purposes": [PURPOSE], "kinds": ["membership", "bulk"],
        "bulk_trusts_partner_software": True,
        "max_elements": max(n, 1_000_000)}]}])
    fed.add_node("fund", partners=[{"id": "agency"}], grpc=grpc)
    return fed


def _ask(config_path: str, csv_path: str, out_path: str, kind: str, results) -> None:
    """The fund centre's query in its own process: the CLI's job, timed per stage."""
    import logging

    from adapters import IdType, open_source
    from node.core.config import load_config
    from node.jobs.files import run_membership
    from node.runtime.context import NodeContext

    stages: dict[str, float] = {}
    spans: dict[str, list[float]] = {}

    class Grab(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            stages.update(getattr(record, "stages", {}))

    logger = logging.getLogger("node.asker.bulk")
    logger.addHandler(Grab())
    logger.setLevel(logging.INFO)

    def progress(stage: str, done: int, total: int | None) -> None:
        now = time.perf_counter()
        spans.setdefault(stage, [now, now])[1] = now

    ctx = NodeContext(load_config(Path(config_path)))
    t0, cpu0 = time.perf_counter(), time.process_time()
    try:
        with open_source(csv_path) as source:
            job = run_membership(ctx, partner="agency", dataset=DATASET, purpose=PURPOSE,
                                 source=source, id_column="id", id_type=IdType.CN_RESIDENT_ID,
                                 out=Path(out_path), rejects=Path(out_path + ".rejected.csv"),
                                 select="intersection", kind=kind, progress=progress)
    finally:
        ctx.close()
    reading = spans.get("reading", [t0, t0])
    results.put({"seconds": round(time.perf_counter() - t0, 3),
                 "cpu_seconds": round(time.process_time() - cpu0, 3),
                 "read_input_seconds": round(reading[1] - t0, 3), "query_seconds": round(job.seconds, 3),
                 "asked": job.asked, "matched": job.matched_rows, "query_id": job.query_id,
                 "stages": stages, "peak_rss_mb": _peak_mb(), "bulk_suggested": job.bulk_suggested})


def ask_apart(config_path: Path, csv_path: Path, out_path: Path, kind: str) -> dict:
    ctx = multiprocessing.get_context("spawn")  # no inherited pages in the RSS figure
    results = ctx.Queue()
    child = ctx.Process(target=_ask, args=(str(config_path), str(csv_path), str(out_path), kind, results))
    child.start()
    try:
        return results.get(timeout=3600)
    finally:
        child.join()


def agency_stages(serve_log: Path, query_id: str) -> dict:
    """The agency's stage times of one query, from its serve.log line (metadata only)."""
    pattern = re.compile(rf"bulk query {re.escape(query_id)}: \d+ rows, stages (\{{.*\}})")
    for line in serve_log.read_text(errors="replace").splitlines():
        found = pattern.search(line)
        if found:
            return ast.literal_eval(found.group(1))
    return {}


def result_digest(path: Path) -> tuple[int, str]:
    """(count, SHA-256 of the sorted identifiers) of a result file written with
    ``select = intersection`` (columns line, id, the answer: 结果 是 or, with --lang en, answer yes)."""
    import csv
    with open(path, newline="", encoding="utf-8-sig") as f:
        ids = sorted({row["id"] for row in csv.DictReader(f)
                      if row.get("结果", row.get("answer")) in ("是", "yes")})
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _register(fed, csv_path: Path) -> float:
    t0 = time.perf_counter()
    fed.cli("dataset", "add", "--config", str(fed.nodes["agency"].config_path), "--name", DATASET,
            "--csv", str(csv_path), "--id-column", "id", timeout=7200)
    return time.perf_counter() - t0


def node_run(n: int, work: Path, client_csv: Path, server_csv: Path, *, crossover: tuple = ()) -> dict:
    """Register, then one cold bulk query between two real nodes; returns its figures."""
    root = work / f"node_fed_{n}"
    fed = _federation(root, n)
    with fed:
        note(f"bulk node: registering {n} rows")
        registration = _register(fed, server_csv)
        emit(bench="bulk_node_registration", rows=n, seconds=round(registration, 1),
             load_average=os.getloadavg()[0])
        agency = fed.start("agency")
        fed.set_partner_address("fund", "agency", agency.address)
        note(f"bulk node: query {n} x {n}")
        out = work / f"bulk_node_out_{n}.csv"
        cpu0 = _cpu_seconds(agency.process.pid)
        fc = ask_apart(fed.nodes["fund"].config_path, client_csv, out, "bulk")
        agency_cpu = round(_cpu_seconds(agency.process.pid) - cpu0, 3)
        count, digest = result_digest(out)
        figures = {"system": "shuqiao-node-bulk", **fc, "intersection": count,
                   "intersection_sha256": digest, "registration_seconds": round(registration, 1),
                   "agency_peak_rss_mb": _peak_mb(agency.process.pid), "agency_cpu_seconds": agency_cpu,
                   "agency_stages": agency_stages(agency.directory / "serve.log", fc["query_id"]),
                   "load_average": os.getloadavg()[0]}
        for size in crossover:
            _crossover(fed, work, client_csv, n, size)
    return figures


def _crossover(fed, work: Path, client_csv: Path, rows: int, size: int) -> None:
    """Both kinds on the first `size` applicants against the registered `rows`."""
    lines = client_csv.read_text(encoding="utf-8").splitlines()
    part = work / f"crossover_{size}.csv"
    part.write_text("\n".join(lines[:size + 1]) + "\n", encoding="utf-8")
    if not (work / "crossover_synced").exists():  # the membership kind's one-off table sync
        note("bulk node: syncing the tag table for the membership kind")
        first = ask_apart(fed.nodes["fund"].config_path, part, work / "sync.csv", "membership")
        emit(bench="bulk_node_crossover", kind="membership", asked=size, rows=rows,
             with_table_sync=True, seconds=first["seconds"], query_seconds=first["query_seconds"])
        (work / "crossover_synced").touch()
    for kind in ("membership", "bulk"):
        note(f"bulk node: crossover {kind} {size} x {rows}")
        r = ask_apart(fed.nodes["fund"].config_path, part, work / f"crossover_{kind}_{size}.csv", kind)
        emit(bench="bulk_node_crossover", kind=kind, asked=size, rows=rows, with_table_sync=False,
             seconds=r["seconds"], query_seconds=r["query_seconds"], cpu_seconds=r["cpu_seconds"],
             matched=r["matched"], bulk_suggested=r["bulk_suggested"],
             load_average=os.getloadavg()[0])
