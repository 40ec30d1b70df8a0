"""One clock: wall-clock time enters the node only in node/core/clock.py, and the clock a
context owns dates what the node stores, signs and compares."""
from __future__ import annotations

import ast
import random
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from adapters import IdType, open_csv, synthetic_resident_id
from node.core.clock import SYSTEM_CLOCK, Clock, FixedClock, SystemClock
from node.core.config import load_config
from node.datasets.epochs import due
from node.datasets.registration import list_versions, register, retire
from node.devtools.localnet import Federation
from node.devtools.synthetic import write_csv
from node.keys.workers import epoch_started
from node.ledger import decode
from node.runtime.context import NodeContext

ROOT = Path(__file__).resolve().parents[2]
NODE = ROOT / "node"
THE_CLOCK = "node/core/clock.py"


def wall_clock_reads(source: str) -> list[int]:
    """Lines that read the wall clock: datetime.now/utcnow/today, date.today, time.time."""
    lines = []
    for item in ast.walk(ast.parse(source)):
        if isinstance(item, ast.ImportFrom) and item.module == "time" and \
                any(a.name in ("time", "time_ns") for a in item.names):
            lines.append(item.lineno)  # a bare time() later on
        if not (isinstance(item, ast.Call) and isinstance(item.func, ast.Attribute)):
            continue
        base = item.func.value
        name = base.id if isinstance(base, ast.Name) else base.attr if isinstance(base, ast.Attribute) else None
        if (item.func.attr in ("now", "utcnow", "today") and name in ("datetime", "date")) or \
                (item.func.attr in ("time", "time_ns") and name == "time"):
            lines.append(item.lineno)
    return lines


def _readers() -> dict[str, list[int]]:
    found = {}
    for path in sorted(NODE.rglob("*.py")):
        rel = path.relative_to(ROOT).as_posix()
        if rel.startswith("node/rpc/"):
            continue
        lines = wall_clock_reads(path.read_text(encoding="utf-8"))
        if lines:
            found[rel] = lines
    return found


def test_the_scan_finds_every_way_of_reading_the_wall_clock():
    source = """
import datetime as dt, time
from datetime import date, datetime
from time import time as seconds
a = datetime.now(timezone.utc); b = datetime.utcnow(); c = dt.datetime.now()
d = date.today(); e = time.time(); f = time.time_ns()
g = time.monotonic(); h = time.perf_counter(); i = ledger.now(); j = ctx.clock.now()
"""
    assert sorted(wall_clock_reads(source)) == [4, 5, 5, 5, 6, 6, 6]


def test_only_the_clock_module_reads_the_wall_clock():
    readers = _readers()
    assert THE_CLOCK in readers  # the scan works on the real tree
    strays = {m: lines for m, lines in readers.items() if m != THE_CLOCK}
    assert strays == {}, "read ctx.clock (or the ledger's clock), not the wall clock"


def test_a_fixed_clock_stands_still_until_moved():
    clock = FixedClock(datetime(2030, 1, 2, 11, 0, tzinfo=timezone(timedelta(hours=8))))
    assert isinstance(clock, Clock)
    assert clock.now() == clock.now() == datetime(2030, 1, 2, 3, 0, tzinfo=timezone.utc)
    assert clock.now().tzinfo == timezone.utc
    assert clock.advance(days=1, minutes=5) == datetime(2030, 1, 3, 3, 5, tzinfo=timezone.utc)
    assert clock.advance(timedelta(seconds=-30)) == datetime(2030, 1, 3, 3, 4, 30, tzinfo=timezone.utc)
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2030, 1, 1))


def test_the_system_clock_is_aware_utc():
    before = datetime.now(timezone.utc)
    now = SystemClock().now()
    assert now.tzinfo == timezone.utc and before <= now <= datetime.now(timezone.utc)


# -- a node on its context's clock ----------------------------------------------------------

def _utc(value: datetime) -> datetime:
    return value if value.tzinfo else value.replace(tzinfo=timezone.utc)  # SQLite drops the zone


@pytest.fixture
def node_on_a_fixed_clock(tmp_path):
    fed = Federation(tmp_path / "fed")
    fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[
        {"name": "roll", "epoch_days": 30, "grants": [{"partner": "fund", "purposes": ["p1"]}]}])
    clock = FixedClock(datetime(2031, 5, 6, 7, 8, 9, tzinfo=timezone.utc))
    ctx = NodeContext(load_config(fed.nodes["hrss"].config_path), clock=clock)
    rng = random.Random(7)
    path = tmp_path / "roll.csv"
    write_csv(path, ["sfzh"], [(synthetic_resident_id(rng),) for _ in range(40)])
    yield ctx, clock, path
    ctx.close()


def test_the_context_clock_dates_what_the_node_stores_and_compares(node_on_a_fixed_clock):
    ctx, clock, path = node_on_a_fixed_clock
    assert NodeContext(ctx.config).clock is SYSTEM_CLOCK  # a node's default
    registered = clock.now()
    with open_csv(path) as src:
        register(ctx, "roll", src, id_column="sfzh", id_type=IdType.CN_RESIDENT_ID,
                 source_kind="csv", source_label="roll.csv")
    with ctx.engine.connect() as conn:
        (version,) = list_versions(conn, "roll")
        assert _utc(version.created_at) == registered
        assert epoch_started(conn, "roll", "fund", 1) == registered
        tables = conn.execute(sa.text("SELECT created_at FROM tag_tables")).scalars().all()
        assert tables and all(_utc(datetime.fromisoformat(str(t))) == registered for t in tables)
    times = {decode(data).time for _, data in ctx.ledger.entries()}
    assert times == {"2031-05-06T07:08:09Z"}
    assert ctx.ledger.sign_head(force=True).time == "2031-05-06T07:08:09Z"

    assert due(ctx) == []  # the key epoch's age is the context's time minus its start
    clock.advance(days=30)
    assert due(ctx) == [("roll", "fund")]
    retire(ctx, "roll", 1)
    with ctx.engine.connect() as conn:
        (version,) = list_versions(conn, "roll")
    assert _utc(version.retired_at) == registered + timedelta(days=30)
