"""`shuqiao query aggregate` and `shuqiao query threshold`: the statistics kinds."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from adapters import IdType, SourceError, read_applicants

from node.asker import statistics as stats
from node.cli.common import Bars, ConfigOpt, fail, node_context, out, query_app
from node.cli.inputs import (Dataset, IdColumn, IdTypeOpt, InputOpt, Partner, Purpose, open_input,
                             report_rejects)
from node.core.config import ConfigError
from node.core.errors import PartnerError
from node.jobs.files import ANSWER_COLUMN, write_rejects
from node.storage.private_files import result_csv
from node.datasets.statistics_rows import parse_int

def _read(input_path: Path, encoding: str, id_column: str, id_type: IdType,
          threshold_column: str | None = None):
    """Valid rows (line, values, encoded id, threshold) and rejected (line, reason)."""
    rows, bad = [], []
    with open_input(input_path, encoding) as source:
        extra = [threshold_column] if threshold_column else []
        for a in read_applicants(source, id_column, id_type, columns=extra):
            if a.reason:
                bad.append((a.line, a.reason))
                continue
            limit = None
            if threshold_column:
                limit = parse_int(a.values.get(threshold_column, ""))
                if limit is None or abs(limit) >= 2**62 or threshold_column in a.inexact:
                    bad.append((a.line, f"{threshold_column} is not a whole number "
                                        "(digits only, no separators or decimals)"))
                    continue
            rows.append((a.line, a.values, a.identifier, limit))
        columns = list(source.columns)
    return rows, bad, columns


@query_app.command("aggregate")
def aggregate(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
              input_path: InputOpt, id_column: IdColumn,
              value: Annotated[Optional[str], typer.Option(
                  help="The partner's attribute to sum, e.g. contribution_base.")] = None,
              op: Annotated[str, typer.Option(help="Comma-separated: count, sum, mean.")] = "count",
              group_by: Annotated[Optional[str], typer.Option(
                  help="The partner's attribute to group by, e.g. district.")] = None,
              out_path: Annotated[Optional[Path], typer.Option(
                  "--out", help="Also write the figures to this CSV.")] = None,
              rejects: Annotated[Optional[Path], typer.Option(
                  help="Invalid rows report (default with --out: <out>.rejected.csv).")] = None,
              id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
              encoding: str = "auto") -> None:
    """Count, sum, mean of a partner's attribute over your list ∩ its dataset: group figures only."""
    ops = [o.strip() for o in op.split(",") if o.strip()]
    rejects = rejects or (out_path.with_suffix(".rejected.csv") if out_path else None)
    with node_context(config) as ctx:
        try:
            rows, bad, _ = _read(input_path, encoding, id_column, id_type)
            with Bars() as bars:
                r = stats.aggregate(ctx, partner, dataset, purpose, [v for _, _, v, _ in rows],
                                    value=value or "", ops=ops, group_by=group_by or "",
                                    progress=bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except PartnerError as exc:
            fail(str(exc))
    _show_groups(r, group_by, out_path)
    lines = [f"query {r.query_id}: {r.asked} distinct identifiers asked of {partner}.{dataset} "
             f"v{r.version}; {r.rows} of its rows take part, {r.unusable_rows} without a usable "
             f"value ({r.seconds:.2f} s)", _noise(r)]
    if r.suppressed:
        lines.append(f"groups under {r.min_group_size} suppressed: {', '.join(r.suppressed)}")
    if bad:
        lines.append(report_rejects(bad, rejects))
    if out_path:
        lines.append(f"figures → {out_path}")
    for line in lines:
        out.print(line, highlight=False, soft_wrap=True)


def _show_groups(r, group_by: str | None, out_path: Path | None) -> None:
    """The group figures as a table, and in ``out_path`` if given (suppressed groups blank)."""
    shown = [o for o in ("count", "sum", "mean") if o in r.ops]
    t = Table(group_by or "group", *shown)
    for name, g in r.groups.items():
        figures = {"count": g.count, "sum": g.total,
                   "mean": "-" if g.mean is None else f"{g.mean:.2f}"}
        t.add_row(name or "(all)", *("suppressed" if g.suppressed else str(figures[o])
                                     for o in shown))
    out.print(t)
    if not out_path:
        return
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with result_csv(out_path) as w:
        w.writerow([group_by or "group", *shown, "suppressed"])
        for name, g in r.groups.items():
            figures = {"count": g.count, "sum": g.total, "mean": g.mean}
            w.writerow([name, *("" if g.suppressed else figures[o] for o in shown),
                        "yes" if g.suppressed else "no"])


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
              out_path: Annotated[Path, typer.Option("--out", help="Result CSV.")],
              rejects: Annotated[Optional[Path], typer.Option(
                  help="Invalid rows report (default: <out>.rejected.csv).")] = None,
              id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
              encoding: str = "auto") -> None:
    """Per applicant: is the partner's registered income at least the required amount?"""
    rejects = rejects or out_path.with_suffix(".rejected.csv")
    with node_context(config) as ctx:
        try:
            rows, bad, columns = _read(input_path, encoding, id_column, id_type, threshold_column)
            if not rows:
                raise ValueError("nothing to ask: no valid row in the input")
            with Bars() as bars:
                r = stats.threshold(ctx, partner, dataset, purpose, [v for _, _, v, _ in rows],
                                    [t for _, _, _, t in rows], progress=bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except PartnerError as exc:
            fail(f"{exc}; nothing was written")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    counts = {"yes": 0, "no": 0, "no_income_registered": 0}
    with result_csv(out_path) as w:
        w.writerow(["line", *columns, ANSWER_COLUMN])
        for (line, values, _, _), answer in zip(rows, r.answers):
            word = "no_income_registered" if answer is None else "yes" if answer else "no"
            counts[word] += 1
            w.writerow([line, *(values.get(c, "") for c in columns), word])
    write_rejects(rejects, bad)
    out.print(f"query {r.query_id}: {len(rows)} applicants asked of {partner}.{dataset} "
              f"v{r.version}: {counts['yes']} yes, {counts['no']} no, "
              f"{counts['no_income_registered']} without a usable income; {len(bad)} invalid "
              f"→ {out_path}" + (f", invalid rows → {rejects}" if bad else "")
              + f" ({r.seconds:.2f} s)", highlight=False, soft_wrap=True)
