"""SecretFlow PSI on the bulk benchmark's CSVs, keeping what the bulk comparison needs.

Runs under the peers' venv (stdlib + ``spu`` only; it must not import the project).
Each party is ``../shared/bench/peers.py``'s own ``_sf_party`` — same configuration,
same timing (``seconds`` is the receiver's ``psi_execute``, loopback brpc) — wrapped
so that the receiver's output file is kept long enough to digest the intersection
and each party reports its peak resident memory. One JSON line per system:

    ~/.cache/shuqiao-peers/bin/python bench/bulk_peers.py --peers ../shared/bench \
        --client a.csv --server b.csv --systems sf-ecdh,sf-kkrt,sf-rr22
"""
import argparse
import csv
import hashlib
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time


def intersection_digest(path, column):
    """(count, sha256 of the sorted identifiers joined by newlines) of a CSV's column."""
    with open(path, newline="", encoding="utf-8") as f:
        ids = sorted({row[column] for row in csv.DictReader(f)})
    return len(ids), hashlib.sha256("\n".join(ids).encode()).hexdigest()


def _peak_rss_kb():
    """Peak resident set of this process (VmHWM), falling back to ru_maxrss."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _party(peers_dir, rank, proto, paths, column, ports, out_dir, queue):
    sys.path.insert(0, peers_dir)
    import peers
    peers._sf_party(rank, proto, paths, column, ports, out_dir, queue)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    queue.put(("rss", rank, _peak_rss_kb(), usage.ru_utime + usage.ru_stime))


def run(peers_dir, proto, client_csv, server_csv, column):
    sys.path.insert(0, peers_dir)
    import peers
    ports = (peers.free_port(), peers.free_port())
    queue = mp.Queue()
    out_dir = tempfile.mkdtemp(prefix="bulk-peer-")
    try:
        t0 = time.perf_counter()
        procs = [mp.Process(target=_party, args=(peers_dir, r, proto, (client_csv, server_csv),
                                                 column, ports, out_dir, queue)) for r in (0, 1)]
        for p in procs:
            p.start()
        for p in procs:
            p.join()
        wall = time.perf_counter() - t0
        if any(p.exitcode for p in procs):
            raise RuntimeError(f"{proto}: a party exited with {[p.exitcode for p in procs]}")
        seconds, count, rss, cpu = {}, {}, {}, {}
        for _ in range(4):
            item = queue.get(timeout=60)
            if item[0] == "rss":
                rss[item[1]] = round(item[2] / 1024, 1)
                cpu[item[1]] = round(item[3], 3)
            else:
                seconds[item[0]], count[item[0]] = item[1], item[2]
        found, digest = intersection_digest(os.path.join(out_dir, "out0.csv"), column)
    finally:
        shutil.rmtree(out_dir, ignore_errors=True)
    return {"system": proto, "seconds": round(seconds[0], 3),
            "sender_seconds": round(seconds[1], 3), "wall_with_process_start": round(wall, 3),
            "intersection": count[0], "intersection_in_output": found,
            "intersection_sha256": digest,
            "cpu_seconds_whole_process": {"fund_centre": cpu.get(0), "agency": cpu.get(1)},
            "peak_rss_mb": {"fund_centre": rss.get(0), "agency": rss.get(1)}}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--peers", required=True, help="directory holding shared peers.py")
    ap.add_argument("--client", required=True)
    ap.add_argument("--server", required=True)
    ap.add_argument("--column", default="id")
    ap.add_argument("--systems", default="sf-ecdh,sf-kkrt,sf-rr22")
    args = ap.parse_args()
    for system in args.systems.split(","):
        try:
            line = run(os.path.abspath(args.peers), system, args.client, args.server, args.column)
        except Exception as exc:  # one failed peer must not hide the others
            line = {"system": system, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(line), flush=True)


if __name__ == "__main__":
    main()
