"""Bulk PSI (KKRT16 over OT extension) side by side with SecretFlow ECDH, KKRT and RR22.

Measurements (JSON lines), at 100k x 100k and 1M x 1M (``--quick``: 5k and 20k):

  bulk          ours, cold: two spawned processes, fund centre and agency, joined by a
                pipe that carries every message as bytes; each side starts from its CSV
                file and the fund centre ends with the intersection written to a file.
                ``seconds`` is the fund centre's time from opening its CSV to the
                written result (as SecretFlow's is its ``psi_execute``); per-side stage
                times, bytes each way, peak resident memory of each process
  bulk_node     the bulk query kind between two real nodes (``bench/bulk_node_bench.py``):
                registration apart, then ``query membership --kind bulk``'s job, cold,
                with both node processes' peak memory; at the largest size also
                ``bulk_node_crossover`` (membership against bulk by list size)
  bulk_peer     SecretFlow (``spu``) on the same CSVs in the same run, via the party
                code of ../shared/bench/peers.py (``bench/bulk_peers.py``)
  bulk_compare  the engine and the node against SecretFlow ECDH (target <= 1.0x) and KKRT,
                and whether all systems output the same intersection (SHA-256 of the
                sorted identifiers)

Stages: ``read_csv`` (read and encode identifiers), ``hashing`` (digests, cuckoo
table, the agency's shuffle), ``base_ot``, ``extension`` (PRG, transposes, code,
corrections), ``oprf_hash`` (the correlation-robust hash of every OPRF value),
``matching``, ``write_output``, ``send`` (writing to the pipe) and ``wait`` (blocked
on the peer: its computation plus transfer). The machine has 2 cores shared with
other users, so every figure is noisy: run it twice before believing a ratio, and
read ``cpu_seconds`` (user + system time of each party's process, threads included)
next to the wall times — it moves much less with the machine's load.
"""
from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import random
import subprocess
import time
from collections import Counter
from pathlib import Path

from .common import PEERS_VENV, SHARED, emit, note, two_sets, write_ids

#: What the node feeds the protocol for a resident id (adapters.encode's layout).
PREFIX = b"shuqiao/id/v1/cn_resident_id/"
PEER_SYSTEMS = "sf-ecdh,sf-kkrt,sf-rr22"


class _Clock:
    """Wall and CPU time per stage; a stage runs until the next mark."""

    def __init__(self) -> None:
        self.wall: Counter[str] = Counter()
        self.cpu: Counter[str] = Counter()
        self._stage: str | None = None
        self._since = (time.perf_counter(), time.process_time())

    def mark(self, stage: str | None) -> None:
        now = (time.perf_counter(), time.process_time())
        if self._stage is not None:
            self.wall[self._stage] += now[0] - self._since[0]
            self.cpu[self._stage] += now[1] - self._since[1]
        self._stage, self._since = stage, now


def _read_ids(path: Path):
    """One-column CSV with an ``id`` header -> numpy ``S`` array, without per-row Python
    when every line has the same length (the generated files; else a bytes split)."""
    import numpy as np
    raw = path.read_bytes()
    header, _, body = raw.partition(b"\n")
    if header.rstrip(b"\r") != b"id":
        raise ValueError(f"{path}: expected a single 'id' column")
    width = body.find(b"\n") + 1
    if width > 0 and len(body) % width == 0:
        lines = np.frombuffer(body, f"S{width}")
        ends = np.frombuffer(body, np.uint8)[width - 1::width]
        if np.all(ends == ord("\n")):
            return lines.astype(f"S{width - 1}")      # drops the newline, keeps the id
    return np.char.rstrip(np.array(body.splitlines(), dtype=bytes), b"\r")


def _write_ids(path: Path, ids) -> None:
    import numpy as np
    if ids.size and np.all(np.char.str_len(ids) == ids.dtype.itemsize):
        body = np.char.add(ids, b"\n").tobytes()          # fixed width: one buffer
    else:
        body = b"".join(x + b"\n" for x in ids.tolist())
    path.write_bytes(b"id\n" + body)


def _peak_rss_mb() -> float:
    """This process's peak resident set since exec (VmHWM; ru_maxrss would include
    the parent's pages at fork)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    import resource
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def _party(role: str, csv_path: str, out_path: str, conn, results) -> None:
    """One side, in its own process: CSV in, messages over ``conn``, figures out."""
    import numpy as np

    from protocols.bulk import BulkReceiver, BulkSender

    clock, sent, received = _Clock(), 0, 0
    rss_start = _peak_rss_mb()
    t0, cpu0 = time.perf_counter(), time.process_time()
    clock.mark("read_csv")
    ids = _read_ids(Path(csv_path))
    elements = np.char.add(PREFIX, ids)
    kind = BulkReceiver if role == "fund_centre" else BulkSender
    session = kind(elements, on_stage=clock.mark)
    outgoing = session.start() if role == "fund_centre" else []
    while True:
        for message in outgoing:
            clock.mark("send")
            conn.send_bytes(message)
            sent += len(message)
            clock.mark("protocol")
        if session.finished:
            break
        clock.mark("wait")
        message = conn.recv_bytes()
        received += len(message)
        clock.mark("protocol")
        outgoing = session.handle(message)
    figures = {"role": role, "elements": int(ids.size), "bytes_sent": sent,
               "bytes_received": received, "oprf_evaluations": session.oprf_evaluations}
    if role == "fund_centre":
        clock.mark("write_output")
        found = ids[session.result()]
        _write_ids(Path(out_path), found)
        figures["intersection"] = int(found.size)
    clock.mark(None)
    figures["seconds"] = time.perf_counter() - t0
    figures["cpu_seconds"] = round(time.process_time() - cpu0, 3)
    figures["stages"] = {k: round(v, 3) for k, v in sorted(clock.wall.items())}
    figures["stages_cpu"] = {k: round(v, 3) for k, v in sorted(clock.cpu.items()) if k != "wait"}
    figures["peak_rss_mb"] = _peak_rss_mb()
    figures["rss_after_imports_mb"] = rss_start
    results.put(figures)


def digest_of(path: Path) -> tuple[int, str]:
    """(count, SHA-256 of the sorted identifiers joined by newlines) of an id CSV."""
    ids = sorted(set(path.read_text(encoding="utf-8").split()[1:]))
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()


def ours(client_csv: Path, server_csv: Path, out_csv: Path) -> dict:
    ctx = multiprocessing.get_context("spawn")   # no inherited pages in the RSS figures
    results = ctx.Queue()
    fc_end, agency_end = ctx.Pipe(duplex=True)
    t0 = time.perf_counter()
    procs = [ctx.Process(target=_party, args=("fund_centre", str(client_csv), str(out_csv), fc_end, results)),
             ctx.Process(target=_party, args=("agency", str(server_csv), "", agency_end, results))]
    for p in procs:
        p.start()
    sides = {}
    for _ in procs:
        figures = results.get(timeout=3600)
        sides[figures.pop("role")] = figures
    for p in procs:
        p.join()
    wall = time.perf_counter() - t0
    if any(p.exitcode for p in procs):
        raise RuntimeError("a bulk PSI party failed")
    count, digest = digest_of(out_csv)
    fc, agency = sides["fund_centre"], sides["agency"]
    return {"system": "shuqiao-bulk-kkrt", "seconds": round(fc["seconds"], 3),
            "agency_seconds": round(agency["seconds"], 3),
            "wall_with_process_start": round(wall, 3),
            "cpu_seconds": {"fund_centre": fc["cpu_seconds"], "agency": agency["cpu_seconds"]},
            "intersection": count,
            "intersection_sha256": digest, "oprf_evaluations": fc["oprf_evaluations"],
            "bytes": {"fund_centre_to_agency": fc["bytes_sent"], "agency_to_fund_centre": agency["bytes_sent"]},
            "peak_rss_mb": {"fund_centre": fc["peak_rss_mb"], "agency": agency["peak_rss_mb"]},
            "rss_after_imports_mb": {"fund_centre": fc["rss_after_imports_mb"],
                                     "agency": agency["rss_after_imports_mb"]},
            "stages": {"fund_centre": fc["stages"], "agency": agency["stages"]},
            "stages_cpu": {"fund_centre": fc["stages_cpu"], "agency": agency["stages_cpu"]}}


def peers(client_csv: Path, server_csv: Path, systems: str) -> list[dict]:
    python = PEERS_VENV / "bin" / "python"
    if not python.exists():
        return [{"system": s, "skipped": f"peer venv missing at {PEERS_VENV}; "
                 "run ../shared/bench/setup-peers.sh"} for s in systems.split(",")]
    out = []
    for system in systems.split(","):
        note(f"bulk peer {system}")
        r = subprocess.run([str(python), str(Path(__file__).with_name("bulk_peers.py")),
                            "--peers", str(SHARED / "bench"), "--client", str(client_csv),
                            "--server", str(server_csv), "--systems", system],
                           capture_output=True, text=True, timeout=3600)
        lines = [json.loads(x) for x in r.stdout.splitlines() if x.startswith("{")]
        out.extend(lines or [{"system": system, "error": (r.stderr.strip().splitlines() or ["failed"])[-1]}])
    return out


def _csvs(work: Path, n: int) -> tuple[Path, Path, int, str]:
    client, server = work / f"bulk_client_{n}.csv", work / f"bulk_server_{n}.csv"
    client_ids, server_ids = two_sets(random.Random(13 + n), n, n)
    write_ids(client, client_ids)
    write_ids(server, server_ids)
    common = sorted(set(client_ids) & set(server_ids))
    return client, server, len(common), hashlib.sha256("\n".join(common).encode()).hexdigest()


def compare(n: int, work: Path, peer_systems: str = PEER_SYSTEMS, *, node: bool = True,
            crossover: tuple[int, ...] = ()) -> None:
    note(f"bulk: generating {n} x {n}")
    client, server, expected, expected_digest = _csvs(work, n)
    note(f"bulk: ours {n} x {n}")
    mine = ours(client, server, work / f"bulk_out_{n}.csv")
    mine["correct"] = mine["intersection_sha256"] == expected_digest
    emit(bench="bulk", client=n, server=n, expected_intersection=expected, **mine)
    nodes = None
    if node:
        from .bulk_node_bench import node_run
        nodes = node_run(n, work, client, server, crossover=crossover)
        nodes["correct"] = nodes["intersection_sha256"] == expected_digest
        emit(bench="bulk_node", client=n, server=n, expected_intersection=expected, **nodes)
    others = peers(client, server, peer_systems)
    for line in others:
        emit(bench="bulk_peer", client=n, server=n, **line)
    seconds = {o["system"]: o["seconds"] for o in others if "seconds" in o}
    digests = {o["system"]: o.get("intersection_sha256") for o in others if "seconds" in o}
    if nodes:
        digests["shuqiao-node-bulk"] = nodes["intersection_sha256"]
    ecdh = seconds.get("sf-ecdh")
    emit(bench="bulk_compare", client=n, server=n, ours_seconds=mine["seconds"],
         node_seconds=nodes and nodes["seconds"],
         **{f"{k}_seconds": v for k, v in seconds.items()},
         ratio_to_sf_ecdh=round(mine["seconds"] / ecdh, 3) if ecdh else None,
         node_ratio_to_sf_ecdh=round(nodes["seconds"] / ecdh, 3) if ecdh and nodes else None,
         ratio_to_sf_kkrt=round(mine["seconds"] / seconds["sf-kkrt"], 3) if "sf-kkrt" in seconds else None,
         same_intersection=bool(digests) and all(d == expected_digest for d in digests.values())
         and mine["correct"], systems_compared=sorted(["shuqiao-bulk-kkrt", *digests]),
         load_average=os.getloadavg()[0])


def run(work: Path, *, quick: bool = False, peer_systems: str = PEER_SYSTEMS, node: bool = True) -> None:
    work.mkdir(parents=True, exist_ok=True)
    sizes = (5_000, 20_000) if quick else (100_000, 1_000_000)
    crossover = (1_000, 5_000) if quick else (10_000, 50_000, 100_000)
    for n in sizes:
        compare(n, work, peer_systems, node=node, crossover=crossover if n == sizes[-1] else ())
