"""Threshold tables between real nodes: prepared ahead of queries, sealed, kept, refreshed.

The HRSS node prepares its Paillier key and table when a version is registered or
refreshed and when a key epoch starts; the key's factors are sealed under the node
KEK, so they are nowhere in the database file in the clear, and a restarted node serves
the same table (the fund centre's cached copy stays valid). A refresh keeps the kept
rows' entries byte for byte; a rotation draws a new key. A grant that gains the kind
later is prepared in the background, with requests refused until it is ready.
"""
from __future__ import annotations

import base64
import json
import random
import time
from datetime import datetime, timedelta, timezone

import grpc
import pytest
from sqlalchemy import select

from adapters import IdType, encode
from node.datasets import threshold_tables as ts
from node.asker import threshold_tables as threshold_table
from node.asker.statistics import threshold
from node.core.config import load_config
from node.runtime.context import NodeContext
from node.datasets.epochs import prune_expired
from node.core.errors import PartnerError
from node.ledger import decode
from node.devtools.localnet import Federation
from node.keys.secrets import SealError
from node.storage.schema import threshold_keys, threshold_tables
from node.devtools.synthetic import write_csv

from . import fixtures as fx

pytestmark = pytest.mark.e2e

PURPOSE = fx.PURPOSE
HEADER = ["公民身份号码", "monthly_income", "district"]


def _rows(rng: random.Random, people: list[str]) -> list[dict]:
    return [{"id": p, "monthly_income": "" if i % 9 == 4 else str(rng.randint(2_000, 30_000)),
             "district": "天宁区"} for i, p in enumerate(people)]


def _write(path, rows) -> None:
    write_csv(path, HEADER, ([r["id"], r["monthly_income"], r["district"]] for r in rows))


class Net:
    def __init__(self, root, kinds=("threshold",), storage_url: str | None = None) -> None:
        self.root, self.rng, self.storage_url = root, random.Random(11), storage_url
        pop = fx.people(self.rng, 420)
        self.rows, self.spare = _rows(self.rng, pop[:300]), _rows(self.rng, pop[300:])
        _write(root / "registry.csv", self.rows)
        self.fed = Federation(root / "fed")
        self.configure(kinds)
        self.fed.add_node("fund", partners=[{"id": "hrss"}])

    def configure(self, kinds) -> None:
        self.fed.add_node("hrss", partners=[{"id": "fund"}], storage_url=self.storage_url,
                          datasets=[{
            "name": "workers", "grants": [{"partner": "fund", "purposes": [PURPOSE],
                                           "min_elements": 1, "kinds": ["membership", *kinds],
                                           "threshold_column": "monthly_income"}]}])

    def cfg(self, node: str) -> str:
        return str(self.fed.nodes[node].config_path)

    def register(self) -> None:
        self.fed.cli("dataset", "add", "--config", self.cfg("hrss"), "--name", "workers",
                     "--csv", str(self.root / "registry.csv"), "--id-column", "公民身份号码",
                     "--attribute", "monthly_income", "--attribute", "district")

    def start(self) -> None:
        self.fed.start("hrss")
        self.fed.set_partner_address("fund", "hrss", self.fed.nodes["hrss"].address)

    def ask(self, rows, limits, progress=lambda *a: None):
        ctx = NodeContext(load_config(self.fed.nodes["fund"].config_path))
        try:
            ids = [encode(IdType.CN_RESIDENT_ID, r["id"]) for r in rows]
            return threshold(ctx, "hrss", "workers", PURPOSE, ids, limits, progress=progress)
        finally:
            ctx.close()

    def check(self, rows) -> None:
        """Answers for ``rows`` against the plain comparison at, just above and below."""
        for delta in (0, 1, -1):
            limits = [int(r["monthly_income"] or 0) + delta for r in rows]
            want = [None if not r["monthly_income"] else delta <= 0 for r in rows]
            assert self.ask(rows, limits).answers == want, delta

    def hrss(self) -> NodeContext:
        return NodeContext(load_config(self.fed.nodes["hrss"].config_path))

    def cache(self):
        return (self.fed.nodes["fund"].directory / "statistics" / "threshold-hrss-workers.bin")


def _tables(ctx):
    with ctx.engine.connect() as conn:
        keys = conn.execute(select(threshold_keys).order_by(threshold_keys.c.id)).all()
        tables = conn.execute(select(threshold_tables).order_by(threshold_tables.c.id)).all()
    return keys, tables


def _entries(ctx, table_id: int, tag_length: int, label_length: int) -> dict[bytes, bytes]:
    with ctx.engine.connect() as conn:
        parts = list(ts.iter_table_chunks(conn, table_id))
    tags, labels = b"".join(p[0] for p in parts), b"".join(p[1] for p in parts)
    n = len(tags) // tag_length
    return {tags[i * tag_length:(i + 1) * tag_length]: labels[i * label_length:(i + 1) * label_length]
            for i in range(n)}


def test_prepared_at_registration_sealed_at_rest_and_kept_across_restarts(tmp_path):
    net = Net(tmp_path)
    with net.fed:
        net.register()  # the node is not running: the table comes from registration itself
        ctx = net.hrss()
        try:
            (key,), (table,) = _tables(ctx)
            usable = sum(1 for r in net.rows if r["monthly_income"])
            assert (table.row_count, table.unusable_count) == (usable, len(net.rows) - usable)
            with ctx.engine.connect() as conn:
                row = ts.find_key(conn, "workers", "fund", 1, "monthly_income")
            secret = ts.unseal_key(ctx.kek, row).expose()
            assert secret.p * secret.q == int.from_bytes(key.modulus, "big")
            with pytest.raises(SealError):  # bound to its dataset, partner, epoch and column
                ctx.kek.unseal(key.sealed_key, purpose=ts.key_purpose("workers", "fund", 2,
                                                                      "monthly_income"))
        finally:
            ctx.close()
        db = b"".join(p.read_bytes() for p in net.fed.nodes["hrss"].directory.glob("node.db*"))
        assert key.modulus in db  # the scan sees what is stored in the clear...
        for factor in (secret.p, secret.q):  # ...and the factors are not
            assert factor.to_bytes((factor.bit_length() + 7) // 8, "big") not in db
        with pytest.raises(TypeError):
            import pickle
            pickle.dumps(ts.PaillierSecret(secret))
        assert "redacted" in repr(ts.PaillierSecret(secret)) and str(secret.p) not in repr(
            ts.PaillierSecret(secret))

        net.start()
        net.check(net.rows[:40])
        stamp = net.cache().stat().st_mtime_ns
        net.fed.stop("hrss")
        net.start()  # a restarted node unseals the same key and serves the same table
        net.check(net.rows[40:80])
        assert net.cache().stat().st_mtime_ns == stamp  # same digest: nothing synced again
        data = bytearray(net.cache().read_bytes())
        data[-5] ^= 1  # a damaged copy fails its digest and is synced again
        net.cache().write_bytes(bytes(data))
        stamp = net.cache().stat().st_mtime_ns
        net.check(net.rows[80:100])
        assert net.cache().stat().st_mtime_ns != stamp
        assert net.cache().read_bytes()[-5] == data[-5] ^ 1


def test_a_refresh_keeps_kept_entries_and_encrypts_only_added_rows(tmp_path):
    _refresh(Net(tmp_path), tmp_path)


def test_threshold_tables_on_postgresql(tmp_path, pg_database_url):
    _refresh(Net(tmp_path, storage_url=pg_database_url), tmp_path)


def _refresh(net: Net, tmp_path) -> None:
    with net.fed:
        net.register()
        net.start()
        net.check(net.rows[:20])
        added, removed = net.spare[:60], net.rows[:30]
        _write(tmp_path / "add.csv", added)
        write_csv(tmp_path / "remove.csv", HEADER[:1], ([r["id"]] for r in removed))
        net.fed.cli("dataset", "update", "--config", net.cfg("hrss"), "--name", "workers",
                    "--id-column", "公民身份号码", "--add", str(tmp_path / "add.csv"),
                    "--remove", str(tmp_path / "remove.csv"))
        ctx = net.hrss()
        try:
            keys, (old, new) = _tables(ctx)
            assert len(keys) == 1 and old.key_ref == new.key_ref == keys[0].id
            before = _entries(ctx, old.id, old.tag_length, old.label_length)
            after = _entries(ctx, new.id, new.tag_length, new.label_length)
        finally:
            ctx.close()
        usable = lambda rows: sum(1 for r in rows if r["monthly_income"])  # noqa: E731
        assert len(after) == len(before) - usable(removed) + usable(added)
        kept = set(before) & set(after)
        assert len(kept) == len(before) - usable(removed)
        assert all(before[t] == after[t] for t in kept)  # byte for byte: not encrypted again
        assert new.digest != old.digest
        # The fund centre held the old version's table: it receives only the difference.
        stages = {}
        net.ask(net.rows[30:35], [0] * 5, progress=lambda s, d, t: stages.__setitem__(s, d))
        assert stages.get("table (difference)") == usable(added) and "table" not in stages
        info, tags, labels = threshold_table._load(net.cache())
        held = {tags[i * info.tag_length:(i + 1) * info.tag_length]:
                bytes(labels[i * info.label_length:(i + 1) * info.label_length])
                for i in range(info.rows)}
        assert info.digest == new.digest and held == after
        net.check(added[:30] + net.rows[30:50])
        gone = net.ask(removed[:10], [0] * 10)
        assert gone.answers == [None] * 10
        # Retired and purged, version 1 leaves no table behind; queries go on.
        for step in ("retire", "purge"):
            net.fed.cli("dataset", step, "--config", net.cfg("hrss"), "workers", "--version", "1")
        ctx = net.hrss()
        try:
            assert [t.id for t in _tables(ctx)[1]] == [new.id]
            assert _entries(ctx, old.id, old.tag_length, old.label_length) == {}
        finally:
            ctx.close()
        net.check(added[30:40])


def test_rotation_draws_a_new_key_and_table(tmp_path):
    net = Net(tmp_path)
    with net.fed:
        net.register()
        net.start()
        net.check(net.rows[:20])
        r = net.fed.cli("dataset", "rotate-key", "--config", net.cfg("hrss"), "--name", "workers")
        assert "now on key epoch 2" in r.stdout
        ctx = net.hrss()
        try:
            keys, tables = _tables(ctx)
        finally:
            ctx.close()
        assert [k.epoch for k in keys] == [1, 2] and keys[0].key_id != keys[1].key_id
        assert [t.key_ref for t in tables] == [keys[0].id, keys[1].id]
        net.check(net.rows[20:40])
        # Both preparations are in the ledger: key id, sizes and digest, never a row.
        out = tmp_path / "hrss.jsonl"
        net.fed.cli("audit", "export", "--config", net.cfg("hrss"), "--out", str(out))
        entries = [decode(base64.b64decode(json.loads(line)["e"]))
                   for line in out.read_text().splitlines()[1:]]
        prepared = [e.details for e in entries if getattr(e, "action", "") == "threshold_prepared"]
        assert [(d["epoch"], d["key_sha256"][:32], d["sha256"]) for d in prepared] == [
            (k.epoch, k.key_id.hex(), t.digest.hex()) for k, t in zip(keys, tables)]
        assert all(d["rows"] == tables[0].row_count for d in prepared)
        r = net.fed.cli("audit", "verify", f"export:{out}", "--state-dir",
                        str(tmp_path / "audit-state"), check=False)
        assert r.returncode == 0, r.stdout + r.stderr
        # When epoch 1's grace period is over its threshold table goes too; its key stays.
        ctx = net.hrss()
        try:
            later = datetime.now(timezone.utc) + timedelta(days=365)
            assert prune_expired(ctx, now=later) == [("workers", "fund", 1)]
            assert prune_expired(ctx, now=later) == []  # nothing left: nothing ledgered again
            keys_after, tables_after = _tables(ctx)
        finally:
            ctx.close()
        assert [k.epoch for k in keys_after] == [1, 2]
        assert [t.key_ref for t in tables_after] == [keys[1].id]
        net.check(net.rows[40:50])


def test_a_grant_that_gains_the_kind_is_prepared_in_the_background(tmp_path):
    net = Net(tmp_path, kinds=())
    with net.fed:
        net.register()
        ctx = net.hrss()
        try:
            assert _tables(ctx) == ([], [])
        finally:
            ctx.close()
        net.configure(("threshold",))
        net.start()
        with pytest.raises(PartnerError) as exc:
            net.ask(net.rows[:5], [0] * 5)
        assert exc.value.code == grpc.StatusCode.FAILED_PRECONDITION
        assert "is being prepared" in str(exc.value)
        deadline = time.monotonic() + 120
        while True:
            try:
                net.check(net.rows[:30])
                break
            except PartnerError as exc:
                if "is being prepared" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
        r = net.fed.cli("dataset", "prepare", "--config", net.cfg("hrss"), "--name", "workers")
        usable = sum(1 for r in net.rows if r["monthly_income"])
        assert f"threshold table for fund (epoch 1, column monthly_income): {usable} rows" in r.stdout
