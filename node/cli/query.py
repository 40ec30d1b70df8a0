"""`shuqiao query ...`: the fund-centre operator's queries to partners."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from adapters import IdType, SourceError, read_applicants

from node.asker import membership as asker
from node.asker.cardinality import cardinality as ask_cardinality
from node.cli.common import Bars, ConfigOpt, console, fail, node_context, out, query_app, rule_app
from node.cli.offers import print_offers
from node.cli.inputs import (Dataset, IdColumn, IdTypeOpt, InputOpt, Partner, Purpose, open_input,
                             report_rejects)
from node.core.config import ConfigError
from node.jobs.files import run_membership
from node.policy.querylog import entries


@query_app.command("membership")
def membership(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
               input_path: InputOpt, id_column: IdColumn,
               out_path: Annotated[Path, typer.Option("--out", help="Result CSV.")],
               id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
               rejects: Annotated[Optional[Path], typer.Option(
                   help="Invalid rows report (default: <out>.rejected.csv).")] = None,
               select: Annotated[str, typer.Option(
                   help="Rows to write: all, intersection or difference.")] = "all",
               kind: Annotated[str, typer.Option(
                   help="membership, labeled (adds allow-listed attributes of matched rows), "
                        "predicate, or bulk (the whole list at once by bulk PSI: faster for long "
                        "lists, if the partner grants it).")] = "membership",
               predicate: Annotated[Optional[str], typer.Option(
                   help='Over the partner\'s columns, e.g. "缴费月数 >= 6" (kind predicate or labeled).')] = None,
               auth_column: Annotated[Optional[str], typer.Option(
                   help="Column with each applicant's authorisation reference.")] = None,
               encoding: str = "auto") -> None:
    """Which applicants are in a partner's dataset; the partner learns only how many were asked."""
    rejects = rejects or out_path.with_suffix(".rejected.csv")
    with node_context(config) as ctx:
        try:
            source = open_input(input_path, encoding)
            with source, Bars() as bars:
                job = run_membership(ctx, partner=partner, dataset=dataset, purpose=purpose,
                                     source=source, id_column=id_column, id_type=id_type,
                                     out=out_path, rejects=rejects, select=select, kind=kind,
                                     predicate=predicate, auth_column=auth_column, progress=bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except asker.PartnerError as exc:
            fail(f"{exc}; nothing was written")
    out.print(f"query {job.query_id}: {job.rows} rows ({job.asked} distinct asked), "
              f"{job.matched_rows} in {partner}.{dataset} v{job.version}, {job.invalid} invalid "
              f"→ {out_path}" + (f", invalid rows → {rejects}" if job.invalid else "")
              + f" ({job.seconds:.2f} s)")
    if job.bulk_suggested:
        out.print(f"hint: for {job.asked} identifiers `--kind bulk` answers sooner; "
                  f"{partner} grants it on {dataset}")


@query_app.command("datasets")
def datasets(config: ConfigOpt,
             partner: Annotated[Optional[str], typer.Option(
                 help="Only this partner (default: every partner with an address).")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What partners offer this node, and what it may ask: its own grant on each dataset
    (purposes, kinds, columns, sizes), quotas used and left, and the DP budget left."""
    import json

    from node.asker.offers import askable_partners, list_offers, offer
    with node_context(config) as ctx:
        partners = [partner] if partner else askable_partners(ctx)
        if not partners:
            fail("no partner in this config has an address to ask", 2)
        offers, failed = {}, []
        for p in partners:
            try:
                offers[p] = [offer(i) for i in list_offers(ctx, p)]
            except (asker.PartnerError, ConfigError) as exc:
                if partner:
                    fail(str(exc))
                failed.append(str(exc))
    if as_json:
        out.print_json(json.dumps(offers, ensure_ascii=False))
    else:
        for p, listed in offers.items():
            print_offers(p, listed)
    for problem in failed:
        console.print(f"[bold yellow]warning:[/] {problem}", highlight=False, soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@query_app.command("log")
def log(config: ConfigOpt, limit: int = 50) -> None:
    """The latest entries of this node's query log (metadata only)."""
    with node_context(config) as ctx, ctx.engine.connect() as conn:
        rows = entries(conn, limit)
    t = Table("seq", "query id", "role", "asker", "answerer", "dataset", "v", "epoch", "purpose",
              "elements", "matched", "outcome", "finished")
    for r in rows:
        t.add_row(str(r["seq"]), r["query_id"][:8], r["role"], r["asker"], r["answerer"], r["dataset"],
                  str(r["version"]), str(r["epoch"]), r["purpose"], str(r["elements"]),
                  "" if r["matched"] is None else str(r["matched"]), r["outcome"],
                  r["finished_at"].strftime("%m-%d %H:%M:%S"))
    out.print(t)


@rule_app.command("run")
def rule_run(config: ConfigOpt, name: Annotated[str, typer.Argument(help="Rule name.")],
             rules: Annotated[Path, typer.Option(
                 help="Rule file (TOML: [rules], [purposes]; node/rules/rulefile.py).")],
             input_path: InputOpt, id_column: IdColumn,
             out_path: Annotated[Path, typer.Option("--out", help="Decisions CSV.")],
             id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
             encoding: str = "auto") -> None:
    """One decision per applicant, with the query ids that decided it (for appeals)."""
    from node.rules.language import RuleError
    from node.rules.rulefile import load_rule_file
    from node.rules.runner import run_rule
    with node_context(config) as ctx:
        try:
            rule_file = load_rule_file(rules)
            source = open_input(input_path, encoding)
            with source, Bars() as bars:
                summary = run_rule(ctx, rule_file, name, source, id_column=id_column,
                                   id_type=id_type, out=out_path, progress=bars)
        except (SourceError, ConfigError, RuleError, ValueError) as exc:
            fail(str(exc), 2)
        except asker.PartnerError as exc:
            fail(f"{exc}; nothing was written")
    out.print(f"rule {name}: {summary['rows']} applicants: {summary['eligible']} eligible, "
              f"{summary['not_eligible']} not eligible, {summary['undetermined']} undetermined "
              f"→ {out_path}")
    for text, qid in summary["queries"].items():
        asked = summary["asked_per_source"].get(text)
        out.print(f"  {text}: query {qid}" + (f" ({asked} asked)" if asked is not None else
                                                " (this node's own dataset)"), highlight=False)
    for text, asked in summary["asked_per_source"].items():
        if not asked:
            out.print(f"  {text}: not asked (the local terms decided every applicant)", highlight=False)


@query_app.command("cardinality")
def cardinality(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
                input_path: InputOpt, id_column: IdColumn,
                id_type: IdTypeOpt = IdType.CN_RESIDENT_ID, encoding: str = "auto") -> None:
    """How many of the input are in a partner's dataset: the count only (maybe noised)."""
    with node_context(config) as ctx:
        try:
            ids, bad = set(), []
            with open_input(input_path, encoding) as source:
                for a in read_applicants(source, id_column, id_type):
                    if a.reason:
                        bad.append((a.line, a.reason))
                    else:
                        ids.add(a.identifier)
            with Bars() as bars:
                r = ask_cardinality(ctx, partner, dataset, purpose, sorted(ids), bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except asker.PartnerError as exc:
            fail(str(exc))
    if bad:
        report_rejects(bad, None)
    noise = (f" (differentially private, epsilon {r.epsilon:g}; noise within ±{r.noise_bound})"
             if r.epsilon else " (exact)")
    out.print(f"query {r.query_id}: {r.count} of {len(ids)} distinct identifiers are in "
              f"{partner}.{dataset}{noise}; {len(bad)} invalid rows not asked ({r.seconds:.2f} s)")
