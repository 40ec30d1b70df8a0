"""Printing what a partner offers this node (`shuqiao query datasets`, node/asker/offers.py)."""
from __future__ import annotations

from rich.table import Table
from rich.text import Text

from node.cli.common import out


def _quota(q: dict) -> str:
    if q["limit"] is None:
        return f"{q['window']} {q['used']} used (no quota)"
    return f"{q['window']} {q['used']} of {q['limit']} used, {q['left']} left"


def _privacy(p: dict | None) -> str:
    if p is None:
        return "counts are exact (no differential privacy)"
    spent = f"{p['spent']:g} spent this key epoch"
    if p["budget"] is None:
        return f"epsilon {p['epsilon_per_query']:g} per query, {spent}, no budget"
    return (f"epsilon {p['epsilon_per_query']:g} per query, {spent} of {p['budget']:g}, "
            f"{p['left']:g} left")


def _grant_lines(g: dict) -> list[str]:
    purposes = ", ".join(f"{p['code']} ({p['legal_basis']})" if p["legal_basis"] else p["code"]
                         for p in g["purposes"])
    lines = [f"purposes: {purposes}",
             f"elements per query: {g['min_elements']}..{g['max_elements']} "
             f"(cardinality and aggregate: at least {g['min_counting_elements']})",
             f"predicate columns: {', '.join(g['predicate_columns']) or '-'}; "
             f"label attributes: {', '.join(g['label_attributes']) or '-'}"]
    if g["aggregate_columns"] or g["threshold_column"]:
        lines.append(f"aggregate columns: {', '.join(g['aggregate_columns']) or '-'} (groups of at "
                     f"least {g['min_group_size']}); threshold column: {g['threshold_column'] or '-'}")
    lines.append("quotas: " + "; ".join(_quota(q) for q in g["quotas"]))
    lines.append("privacy: " + _privacy(g["privacy"]))
    return lines


def print_offers(partner: str, offers: list[dict]) -> None:
    t = Table("dataset", "version", "epoch", "rows", "id type", "kinds", "mode",
              title=f"{partner}: datasets offered to this node")
    for o in offers:
        t.add_row(o["dataset"], str(o["version"]), str(o["epoch"]), str(o["rows"]), o["id_type"],
                  ", ".join(o["kinds"]) or "-", o["oprf_mode"].upper())
    out.print(t)
    for o in offers:
        out.print(Text(f"{partner}.{o['dataset']}", "bold"), "— this node's grant:")
        if o["grant"] is None:
            out.print("  (the partner's software does not describe grants)")
            continue
        for line in _grant_lines(o["grant"]):
            out.print(f"  {line}", highlight=False, soft_wrap=True)
