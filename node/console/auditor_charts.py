"""The auditor's overview pages: cross-check status per partner, and charts of the query log.

Charts are drawn here as SVG (svg.py) from audit_stats.py's numbers; under each chart the
same numbers stand in a table (what a screen reader, a printout and the tests read).
"""
from __future__ import annotations

from datetime import date, timedelta

from fastapi import Depends, FastAPI, Request
from markupsafe import Markup

from node.console import svg
from node.console.audit_checks import own_open_conflicts, witnessing_status
from node.console.audit_stats import MAX_DAYS, OUTCOME_ORDER, ROLES, DayTable, collect
from node.console.audit_words import WORDS
from node.console.auditor_ledger import local_time
from node.console.pages import language, menu_item, render, translator
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

DEFAULT_DAYS = 14
# Outcomes keep one colour wherever they appear: answered green, refused red, ...
OUTCOME_COLORS = {"answered": "#1e7b45", "refused": "#b3261e", "failed": "#e08a2c", "aborted": "#6b7280",
                  "broken_by_asker": "#6c5fb5"}


def age_text(seconds: float | None, t) -> str:
    if seconds is None:
        return t("w.never")
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return t("age." + unit, n=int(seconds // size))
    return t("age.s", n=int(seconds))


def chart(chart_id: str, title: str, table: DayTable, t, *, unit: str = "", first: tuple[str, ...] = (),
          colors: dict[str, str] | None = None, label=lambda name: name, horizontal: bool = False) -> dict:
    """One chart for the page: its SVG, and the rows of the table under it."""
    ordered = table.ordered(first)
    names = [label(n) for n, _ in ordered]
    if horizontal:
        drawn = svg.horizontal_bars(chart_id=chart_id, title=title, unit=unit, empty=t("g.empty"),
                                    items=[(label(n), sum(v)) for n, v in ordered])
    else:
        palette = [(colors or {}).get(n) or svg.PALETTE[i % len(svg.PALETTE)] for i, (n, _) in enumerate(ordered)]
        drawn = svg.stacked_bars(chart_id=chart_id, title=title, unit=unit, empty=t("g.empty"), colors=palette,
                                 categories=[d[5:] for d in table.days],
                                 series=[(label(n), v) for n, v in ordered])
    rows = [(day, [values[i] for _, values in ordered], total)
            for i, (day, total) in enumerate(zip(table.days, table.totals())) if total]
    return {"id": chart_id, "title": title, "svg": Markup(drawn), "names": names, "rows": rows,
            "sums": [sum(v) for _, v in ordered], "total": sum(table.totals()), "number": svg.number}


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    auditor = auth.require(Role.AUDITOR)
    menu_item("/console/audit/witnessing", {"zh": "交叉核对", "en": "Cross-checks"}, Role.AUDITOR)
    menu_item("/console/audit/charts", {"zh": "统计图表", "en": "Charts"}, Role.AUDITOR)

    def zone() -> str:
        return ctx.config.service.console_timezone

    @app.get("/console/audit/witnessing", include_in_schema=False)
    def witnessing_page(request: Request, principal: Principal = Depends(auditor)):
        t = translator(language(request), WORDS)
        return render(request, "audit_witnessing.html", principal, words=WORDS, rows=witnessing_status(ctx),
                      own=own_open_conflicts(ctx),
                      age=lambda s: age_text(s, t), when=lambda v: local_time(v, zone()), zone=zone(),
                      size=ctx.ledger.size())

    @app.get("/console/audit/charts", include_in_schema=False)
    def charts_page(request: Request, principal: Principal = Depends(auditor), start: str = "", end: str = "",
                    role: str = "all"):
        t = translator(language(request), WORDS)
        today = ctx.clock.now().astimezone(_zone(zone())).date()
        form = {"start": start, "end": end, "role": role}
        try:
            last = _date(end) or today
            first = _date(start) or last - timedelta(days=DEFAULT_DAYS - 1)
            if first > last:
                raise ValueError("the start date is after the end date")
            if (last - first).days >= MAX_DAYS:
                raise ValueError(f"choose at most {MAX_DAYS} days")
            with ctx.engine.connect() as conn:
                stats = collect(conn, ctx.config.node.id, zone(), first, last, role)
        except ValueError as exc:
            return render(request, "audit_charts.html", principal, words=WORDS, status_code=400, form=form,
                          roles=ROLES, problem=t("g.bad_range", why=exc), charts=[], stats=None)
        form.update(start=first.isoformat(), end=last.isoformat())

        def outcome(name: str) -> str:
            shown = t("o." + name)
            return name if shown == "o." + name else shown
        charts = [
            chart("by-partner", t("g.by_partner"), stats.by_partner, t, unit=t("g.unit.queries")),
            chart("by-outcome", t("g.by_outcome"), stats.by_outcome, t, unit=t("g.unit.queries"),
                  first=OUTCOME_ORDER, colors=OUTCOME_COLORS, label=outcome),
            chart("by-purpose", t("g.by_purpose"), stats.by_purpose, t, unit=t("g.unit.queries")),
            chart("elements", t("g.elements"), stats.elements, t, unit=t("g.unit.elements")),
            chart("refusals", t("g.refusals"), stats.refusals, t, unit=t("g.unit.queries"), horizontal=True),
            chart("epsilon", t("g.epsilon"), stats.epsilon, t),
        ]
        refused = sum(stats.refusals.totals())
        return render(request, "audit_charts.html", principal, words=WORDS, form=form, roles=ROLES, problem=None,
                      charts=charts, stats=stats, refused=refused, zone=zone(),
                      elements=sum(stats.elements.totals()), epsilon=sum(stats.epsilon.totals()),
                      number=svg.number)


def _zone(name: str):
    from zoneinfo import ZoneInfo
    return ZoneInfo(name)


def _date(text: str) -> date | None:
    if not text:
        return None
    try:
        return date.fromisoformat(text.strip()[:10])
    except ValueError:
        raise ValueError(f"{text[:20]!r} is not a date (YYYY-MM-DD)") from None
