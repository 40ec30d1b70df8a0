"""`make bench`: every benchmark, one JSON line per measurement, side by side with peers."""
from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from . import membership_bench


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench")
    ap.add_argument("--only", default="membership,kinds,ledger,he,stats,bulk,realtime",
                    help="comma-separated: membership, kinds, ledger, he (protocol only), "
                         "stats (aggregate and threshold between nodes), bulk (OT-extension "
                         "PSI, the engine alone and the bulk kind between two nodes, against "
                         "SecretFlow ECDH/KKRT/RR22), realtime (POST /v1/checks latency over "
                         "HTTPS against a 1M-row partner dataset)")
    ap.add_argument("--quick", action="store_true", help="small sizes, to check the benchmarks run")
    ap.add_argument("--work", type=Path, help="keep generated files here")
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="shuqiao-bench-"))
    only = set(args.only.split(","))
    try:
        if "membership" in only:
            membership_bench.run(work / "membership", quick=args.quick)
        if "kinds" in only:
            from . import kinds_bench
            kinds_bench.run(work / "kinds", quick=args.quick)
        if "ledger" in only:
            from . import ledger_bench
            ledger_bench.run(work / "ledger", quick=args.quick)
        if "he" in only:
            from . import he_bench
            he_bench.run(print, quick=args.quick)
        if "stats" in only:
            from . import stats_node_bench
            stats_node_bench.run(work / "stats", quick=args.quick)
        if "bulk" in only:
            from . import bulk_bench
            bulk_bench.run(work / "bulk", quick=args.quick)
        if "realtime" in only:
            from . import realtime_bench
            realtime_bench.run(work / "realtime", quick=args.quick)
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
