"""`shuqiao query aggregate` and `shuqiao query threshold`: the statistics kinds."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from adapters import IdType

from node.cli.choices import AggregateOp
from node.cli.common import ConfigOpt, JsonOpt, emit_json, out, query_app
from node.cli.common import Dataset, IdColumn, IdTypeOpt, InputOpt, Partner, Purpose, run_over_input
from node.cli.common import FORMATS_HELP, LangOpt, RejectsOpt, default_rejects, rejects_line
from node.jobs.results import Lang, mean_noise_bound
from node.jobs.statistics import run_aggregate, run_threshold


@query_app.command("aggregate")
def aggregate(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
              input_path: InputOpt, id_column: IdColumn,
              value: Annotated[Optional[str], typer.Option(
                  help="The partner's attribute to sum, e.g. contribution_base.")] = None,
              op: Annotated[list[AggregateOp], typer.Option(
                  help="count, sum or mean; repeat for several: --op sum --op mean.")] = [AggregateOp.COUNT],
              group_by: Annotated[Optional[str], typer.Option(
                  help="The partner's attribute to group by, e.g. district.")] = None,
              out_path: Annotated[Optional[Path], typer.Option(
                  "--out", help=f"Also write the figures and their noise bounds here. {FORMATS_HELP}")] = None,
              rejects: RejectsOpt = None, id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
              lang: LangOpt = Lang.zh, as_json: JsonOpt = False, encoding: str = "auto") -> None:
    """Count, sum, mean of a partner's attribute over your list ∩ its dataset: group figures only."""
    ops = list(dict.fromkeys(o.value for o in op))
    rejects = rejects or default_rejects(out_path)
    job = run_over_input(config, input_path, encoding, lambda ctx, source, bars: run_aggregate(
        ctx, partner=partner, dataset=dataset, purpose=purpose, source=source, id_column=id_column,
        id_type=id_type, value=value or "", ops=ops, group_by=group_by or "", out=out_path,
        rejects=rejects, lang=lang, progress=bars), say_nothing_written=False)
    r = job.result
    if as_json:
        return emit_json({**job.facts, "groups": [_group_json(r, g) for g in r.groups.values()],
                          "out": out_path and str(out_path), "rejects": rejects and str(rejects)})
    out.print(_groups_table(r, group_by))
    lines = [f"query {r.query_id}: {r.asked} distinct identifiers asked of {partner}.{dataset} "
             f"v{r.version}; {r.rows} of its rows take part, {r.unusable_rows} without a usable "
             f"value (ledger #{job.facts['ledger_index']}, {r.seconds:.2f} s)", _noise(r)]
    if r.suppressed:
        lines.append(f"groups under {r.min_group_size} suppressed: {', '.join(r.suppressed)}")
    lines.append(rejects_line(job.listing.rejected, rejects))
    if out_path:
        lines.append(f"figures → {out_path}")
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def _group_json(r, g) -> dict:
    bounds = {"count_noise_bound": r.count_noise_bound, "sum_noise_bound": r.sum_noise_bound,
              "mean_noise_bound": mean_noise_bound(g.count, g.total, r.count_noise_bound,
                                                   r.sum_noise_bound)}
    figures = {"count": g.count, "sum": g.total, "mean": g.mean}
    shown = {}
    for o in r.ops:
        shown[o] = None if g.suppressed else figures[o]
        shown[f"{o}_noise_bound"] = None if g.suppressed else bounds[f"{o}_noise_bound"]
    return {"group": g.name, **shown, "suppressed": g.suppressed}


def _groups_table(r, group_by: str | None) -> Table:
    shown = [o for o in ("count", "sum", "mean") if o in r.ops]
    t = Table(group_by or "group", *shown)
    for name, g in r.groups.items():
        figures = {"count": g.count, "sum": g.total,
                   "mean": "-" if g.mean is None else f"{g.mean:.2f}"}
        t.add_row(name or "(all)", *("suppressed" if g.suppressed else str(figures[o])
                                     for o in shown))
    return t


def _noise(r) -> str:
    if not r.epsilon:
        return "exact figures"
    return (f"differentially private, epsilon {r.epsilon:g}: count noise within "
            f"±{r.count_noise_bound}" + (f", sum noise within ±{r.sum_noise_bound}"
                                         if r.sum_noise_bound else ""))


@query_app.command("threshold")
def threshold(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
              input_path: InputOpt, id_column: IdColumn,
              threshold_column: Annotated[str, typer.Option(
                  help="Column with each applicant's required amount (whole number, in the "
                       "unit of the partner's column).")],
              out_path: Annotated[Path, typer.Option("--out", help=f"Result file. {FORMATS_HELP}")],
              rejects: RejectsOpt = None, id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
              lang: LangOpt = Lang.zh, as_json: JsonOpt = False, encoding: str = "auto") -> None:
    """Per applicant: is the partner's registered income at least the required amount?"""
    rejects = rejects or default_rejects(out_path)
    job = run_over_input(config, input_path, encoding, lambda ctx, source, bars: run_threshold(
        ctx, partner=partner, dataset=dataset, purpose=purpose, source=source, id_column=id_column,
        id_type=id_type, threshold_column=threshold_column, out=out_path, rejects=rejects,
        lang=lang, progress=bars))
    r, counts = job.result, job.counts
    if as_json:
        return emit_json({**job.facts, "yes": counts["yes"], "no": counts["no"],
                          "no_income_registered": counts["no_income"], "out": str(out_path),
                          "rejects": str(rejects)})
    out.print(f"query {r.query_id}: "
              f"{job.facts['asked']} applicants asked of {partner}.{dataset} "
              f"v{r.version}: {counts['yes']} yes, {counts['no']} no, "
              f"{counts['no_income']} without a usable income; "
              f"{len(job.listing.rejected)} invalid → {out_path}, invalid rows → {rejects} "
              f"(ledger #{job.facts['ledger_index']}, {r.seconds:.2f} s)", highlight=False,
              soft_wrap=True)
