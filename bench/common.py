"""Shared bits for the benchmarks: JSON-line output, synthetic id files, the peers' venv."""
from __future__ import annotations

import json
import os
import random
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from adapters import synthetic_resident_id

PEERS_VENV = Path(os.environ.get("SHUQIAO_PEERS_VENV", Path.home() / ".cache" / "shuqiao-peers"))
SHARED = Path(__file__).resolve().parents[1].parent / "shared"


def emit(**fields) -> None:
    """One measurement, one JSON line on stdout."""
    print(json.dumps(fields, ensure_ascii=False), flush=True)


def note(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


@contextmanager
def timer():
    box = {}
    t0 = time.perf_counter()
    yield box
    box["seconds"] = time.perf_counter() - t0


def distinct_ids(rng: random.Random, n: int) -> list[str]:
    out: set[str] = set()
    while len(out) < n:
        out.add(synthetic_resident_id(rng))
    return list(out)


def write_ids(path: Path, ids: list[str], column: str = "id") -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.write(column + "\n")
        f.write("\n".join(ids))
        f.write("\n")
    return path


def two_sets(rng: random.Random, client: int, server: int, overlap: float = 0.5):
    """Client and server id lists sharing `overlap` of the client's ids."""
    common = int(client * overlap)
    pool = distinct_ids(rng, client + server - common)
    server_ids = pool[:server]
    client_ids = pool[:common] + pool[server:]
    rng.shuffle(client_ids)
    rng.shuffle(server_ids)
    return client_ids, server_ids
