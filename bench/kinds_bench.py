"""Benchmarks of the query kinds beyond membership (JSON lines).

  labeled        10,000 identifiers against 1,000,000 rows carrying sealed labels
  cardinality    100,000 identifiers against 1,000,000 rows, fresh keys per query
  refresh        a 1% refresh of the million-row dataset vs a full re-registration
"""
from __future__ import annotations

import random
from pathlib import Path

from adapters import IdType, encode

from .common import distinct_ids, emit, note, timer

PURPOSE = "benchmark"


def _federation(root: Path):
    from node.core.config import load_config
    from node.runtime.context import NodeContext
    from node.devtools.localnet import Federation
    fed = Federation(root)
    fed.add_node("agency", partners=[{"id": "fund"}], datasets=[{"name": "roll", "grants": [{
        "partner": "fund", "purposes": [PURPOSE], "kinds": ["membership", "labeled", "cardinality"],
        "label_attributes": ["year", "school"], "label_pad_to": 64}]}],
        grpc={"deadline_seconds": 1800})
    fed.add_node("fund", partners=[{"id": "agency"}], grpc={"deadline_seconds": 1800})
    fed.start("agency")
    fed.set_partner_address("fund", "agency", fed.nodes["agency"].address)
    return fed, NodeContext(load_config(fed.nodes["fund"].config_path))


def _write(path: Path, ids, rng) -> Path:
    with open(path, "w", encoding="utf-8") as f:
        f.write("id,year,school\n")
        for x in ids:
            f.write(f"{x},{rng.choice((2024, 2025, 2026))},school-{rng.randrange(40)}\n")
    return path


def run(work: Path, *, quick: bool = False) -> None:
    from node.asker import membership as asker
    from node.asker.cardinality import cardinality as ask_cardinality
    work.mkdir(parents=True, exist_ok=True)
    rows = 20_000 if quick else 1_000_000
    rng = random.Random(44)
    outsiders = 50_000 if not quick else 500
    people = distinct_ids(rng, rows + max(rows // 100, outsiders))
    server, extra = people[:rows], people[rows:]
    csv_path = _write(work / "roll.csv", server, rng)
    fed, fund = _federation(work / "fed")
    cfg = str(fed.nodes["agency"].config_path)
    try:
        note(f"kinds: registering {rows} rows with labels")
        with timer() as t:
            fed.cli("dataset", "add", "--config", cfg, "--name", "roll", "--csv", str(csv_path),
                    "--id-column", "id", "--attribute", "year", "--attribute", "school", timeout=3600)
        emit(bench="registration_with_labels", rows=rows, seconds=round(t["seconds"], 3))
        asked = rng.sample(server, 5_000) + extra[:5_000] if not quick else rng.sample(server, 500) + extra[:500]
        enc = [encode(IdType.CN_RESIDENT_ID, x) for x in asked]
        asker.membership(fund, "agency", "roll", PURPOSE, enc[:1], kind="labeled")  # sync once
        with timer() as t:
            r = asker.membership(fund, "agency", "roll", PURPOSE, enc, kind="labeled")
        emit(bench="labeled", against=rows, asked=len(enc), matched=int(r.matched.sum()),
             opened=sum(1 for x in r.labels if x), seconds=round(t["seconds"], 3))

        card_asked = [encode(IdType.CN_RESIDENT_ID, x) for x in
                      (rng.sample(server, 50_000) + extra[:50_000] if not quick else rng.sample(server, 1000))]
        assert quick or len(card_asked) == 100_000
        note("kinds: cardinality")
        with timer() as t:
            c = ask_cardinality(fund, "agency", "roll", PURPOSE, card_asked)
        emit(bench="cardinality", against=rows, asked=len(card_asked), count=c.count,
             seconds_first=round(t["seconds"], 3), note="first query hashes the version's rows once")
        with timer() as t:
            c = ask_cardinality(fund, "agency", "roll", PURPOSE, card_asked)
        emit(bench="cardinality", against=rows, asked=len(card_asked), count=c.count,
             seconds=round(t["seconds"], 3), fresh_key_scalar_mults=2 * rows + 2 * len(card_asked),
             note="the agency counts: b*H(y), b*A; the fund centre re-keys the rows (a*Y')")

        note("kinds: 1% refresh")
        churn = rows // 100
        removed = rng.sample(server, churn // 2)
        added = extra[: churn // 2]
        _write(work / "add.csv", added, rng)
        with open(work / "remove.csv", "w") as f:
            f.write("id\n" + "\n".join(removed) + "\n")
        with timer() as t:
            fed.cli("dataset", "update", "--config", cfg, "--name", "roll", "--id-column", "id",
                    "--add", str(work / "add.csv"), "--remove", str(work / "remove.csv"),
                    "--rejects", str(work / "refresh-rejected.csv"), timeout=3600)
        refresh_s = t["seconds"]
        with timer() as t:
            asker.membership(fund, "agency", "roll", PURPOSE, enc[:1])   # delta sync
        delta_sync = t["seconds"]
        kept = set(server) - set(removed)
        _write(work / "full.csv", sorted(kept) + added, rng)
        with timer() as t:
            fed.cli("dataset", "add", "--config", cfg, "--name", "roll", "--csv", str(work / "full.csv"),
                    "--id-column", "id", "--attribute", "year", "--attribute", "school", timeout=3600)
        full_s = t["seconds"]
        with timer() as t:
            asker.membership(fund, "agency", "roll", PURPOSE, enc[:1])   # full sync
        emit(bench="refresh", rows=rows, changed=2 * (churn // 2), refresh_seconds=round(refresh_s, 3),
             delta_sync_seconds=round(delta_sync, 3), full_registration_seconds=round(full_s, 3),
             full_sync_seconds=round(t["seconds"], 3))
    finally:
        fund.close()
        fed.close()
