"""`shuqiao query log` as a table: readable at 80 columns, every column with ``--wide``.

At 80 columns a table of every field cuts each cell to two or three characters, so the
default shows the fields an operator looks a query up by, kept whole (sequence, short
query id, ledger position, outcome, time), and lets the others wrap. ``--wide`` shows
every field and full query ids; ``--json`` every field as data.
"""
from __future__ import annotations

from rich import box
from rich.table import Table

_ARROW = {"asker": "→ ", "answerer": "← ", "local": "local "}


def _other_party(r: dict) -> str:
    """Whom the query was with: "→ hrss" (asked hrss), "← fund" (answered fund)."""
    if r["role"] == "local":
        return "local"
    return _ARROW.get(r["role"], "") + (r["answerer"] if r["role"] == "asker" else r["asker"])


def _count(r: dict) -> str:
    return str(r["elements"]) if r["matched"] is None else f"{r['matched']}/{r['elements']}"


def _ledger(r: dict) -> str:
    return "" if r.get("ledger_index") is None else f"#{r['ledger_index']}"


def log_table(rows: list[dict], wide: bool = False) -> Table:
    if wide:
        return _wide(rows)
    t = Table(box=box.SIMPLE_HEAD, show_edge=False, padding=(0, 1, 0, 0))  # one space between
    for name in ("query", "ledger"):
        t.add_column(name, no_wrap=True)
    t.add_column("what", min_width=12, overflow="fold")  # the one column that gives way
    for name in ("matched/n", "outcome", "finished"):
        t.add_column(name, no_wrap=True)
    for r in rows:
        what = f"{r['kind']} {_other_party(r)}\n{r['dataset']} v{r['version']}"
        t.add_row(r["query_id"][:8], _ledger(r), what, _count(r), r["outcome"],
                  r["finished_at"].strftime("%m-%d %H:%M"))
    return t


def _wide(rows: list[dict]) -> Table:
    t = Table("seq", "query id", "ledger", "role", "asker", "answerer", "kind", "dataset", "v",
              "epoch", "purpose", "elements", "matched", "epsilon", "outcome", "reason",
              "predicate", "finished", box=box.SIMPLE_HEAD)
    for r in rows:
        t.add_row(str(r["seq"]), r["query_id"], _ledger(r), r["role"], r["asker"], r["answerer"],
                  r["kind"], r["dataset"], str(r["version"]), str(r["epoch"]), r["purpose"],
                  str(r["elements"]), "" if r["matched"] is None else str(r["matched"]),
                  f"{r['epsilon_micro'] / 1e6:g}" if r["epsilon_micro"] else "", r["outcome"],
                  r["reason"], r["predicate"], r["finished_at"].isoformat(timespec="seconds"))
    return t
