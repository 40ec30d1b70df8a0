"""`shuqiao query ...`: the fund-centre operator's queries to partners, the query log, rules."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from adapters import IdType, SourceError

from node.asker import membership as asker
from node.cli.choices import MembershipKind, RowSelection
from node.cli.common import (Bars, ConfigOpt, JsonOpt, emit_json, fail, node_context, out, query_app,
                             rule_app, warn)
from node.cli.offers import print_offers
from node.cli.common import (Dataset, IdColumn, IdTypeOpt, InputOpt, Partner, Purpose, open_input,
                             run_over_input)
from node.cli.common import FORMATS_HELP, LangOpt, RejectsOpt, default_rejects, rejects_line
from node.core.config import ConfigError
from node.jobs.results import Lang

OutOpt = Annotated[Path, typer.Option("--out", help=f"Result file. {FORMATS_HELP}")]


@query_app.command("membership")
def membership(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
               input_path: InputOpt, id_column: IdColumn, out_path: OutOpt,
               id_type: IdTypeOpt = IdType.CN_RESIDENT_ID, rejects: RejectsOpt = None,
               select: Annotated[RowSelection, typer.Option(
                   help="Rows to write: all (invalid rows too), intersection or difference.")
               ] = RowSelection.ALL,
               kind: Annotated[MembershipKind, typer.Option(
                   help="membership, labeled (adds allow-listed attributes of matched rows), "
                        "predicate, or bulk (the whole list at once by bulk PSI: faster for long "
                        "lists, if the partner grants it).")] = MembershipKind.MEMBERSHIP,
               predicate: Annotated[Optional[str], typer.Option(
                   help='Over the partner\'s columns, e.g. "缴费月数 >= 6" (kind predicate or labeled).')] = None,
               auth_column: Annotated[Optional[str], typer.Option(
                   help="Column with each applicant's authorisation reference.")] = None,
               lang: LangOpt = Lang.zh, as_json: JsonOpt = False, encoding: str = "auto") -> None:
    """Which applicants are in a partner's dataset; the partner learns only how many were asked."""
    from node.jobs.files import run_membership
    rejects = rejects or default_rejects(out_path)
    job = run_over_input(config, input_path, encoding, lambda ctx, source, bars: run_membership(
        ctx, partner=partner, dataset=dataset, purpose=purpose, source=source, id_column=id_column,
        id_type=id_type, out=out_path, rejects=rejects, select=select.value, kind=kind.value,
        predicate=predicate, auth_column=auth_column, lang=lang, progress=bars))
    if as_json:
        return emit_json({**vars(job), "partner": partner, "dataset": dataset,
                          "out": str(out_path), "rejects": str(rejects)})
    out.print(f"query {job.query_id}: {job.rows} rows "
              f"({job.asked} distinct asked), {job.matched_rows} in {partner}.{dataset} "
              f"v{job.version}, {job.invalid} invalid → {out_path}, invalid rows → {rejects} "
              f"(ledger #{job.ledger_index}, {job.seconds:.2f} s)", highlight=False, soft_wrap=True)
    if job.bulk_suggested:
        out.print(f"hint: for {job.asked} identifiers `--kind bulk` answers sooner; "
                  f"{partner} grants it on {dataset}", highlight=False)


@query_app.command("datasets")
def datasets(config: ConfigOpt,
             partner: Annotated[Optional[str], typer.Option(
                 help="Only this partner (default: every partner with an address).")] = None,
             as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """What partners offer this node, and what it may ask: its own grant on each dataset
    (purposes, kinds, columns, sizes), quotas used and left, and the DP budget left."""

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
        emit_json(offers)
    else:
        for p, listed in offers.items():
            print_offers(p, listed)
    for problem in failed:
        warn(problem)
    if failed:
        raise typer.Exit(1)


@query_app.command("log")
def log(config: ConfigOpt, limit: int = 50,
        wide: Annotated[bool, typer.Option(
            "--wide", help="Every column, full query ids (needs a wide terminal).")] = False,
        as_json: JsonOpt = False) -> None:
    """The latest entries of this node's query log (metadata only), newest first.

    "ledger" is where this node's ledger holds the query (what its result file names).
    """
    from node.cli.query_log import log_table
    from node.policy.querylog import entries
    with node_context(config) as ctx, ctx.engine.connect() as conn:
        rows = entries(conn, limit)
    if as_json:
        return emit_json(rows)
    out.print(log_table(rows, wide))


@rule_app.command("run")
def rule_run(config: ConfigOpt, name: Annotated[str, typer.Argument(help="Rule name.")],
             rules: Annotated[Path, typer.Option(
                 help="Rule file (TOML: [rules], [purposes]; node/rules/rulefile.py).")],
             input_path: InputOpt, id_column: IdColumn, out_path: OutOpt,
             id_type: IdTypeOpt = IdType.CN_RESIDENT_ID, lang: LangOpt = Lang.zh,
             as_json: JsonOpt = False, encoding: str = "auto") -> None:
    """One decision per applicant, with the query ids that decided it (for appeals)."""
    from node.jobs.results import Words, decisions_table, rule_facts
    from node.rules.language import RuleError
    from node.rules.rulefile import load_rule_file
    from node.rules.runner import run_rule
    from node.storage.result_files import result_format, write_result
    with node_context(config) as ctx:
        try:
            result_format(out_path)
            rule_file = load_rule_file(rules)
            source = open_input(input_path, encoding)
            with source, Bars() as bars:
                run = run_rule(ctx, rule_file, name, source, id_column=id_column,
                               id_type=id_type, progress=bars)
            words = Words(lang)
            facts = rule_facts(ctx, run.rule, run.text, run.queries, input=source.description,
                               id_column=id_column, rows=run.rows, asked=run.asked)
            write_result(out_path, decisions_table(words, run.columns, run.decisions),
                         words.info(facts))
        except (SourceError, ConfigError, RuleError, ValueError) as exc:
            fail(str(exc), 2)
        except asker.PartnerError as exc:
            fail(f"{exc}; nothing was written")
    counts = run.counts
    if as_json:
        return emit_json({"rule": name, "rows": run.rows, "asked": run.asked, **counts,
                          "queries": facts["queries"], "asked_per_source": run.asked_per_source,
                          "out": str(out_path)})
    out.print(f"rule {name}: {run.rows} applicants: {counts['eligible']} eligible, "
              f"{counts['not_eligible']} not eligible, {counts['undetermined']} undetermined "
              f"→ {out_path}", highlight=False, soft_wrap=True)
    for q in facts["queries"]:
        asked = run.asked_per_source.get(q["source"])
        out.print(f"  {q['source']}: query {q['query_id']} "
                  + (f"({asked} asked)" if asked is not None else "(this node's own dataset)")
                  + f", ledger #{q['ledger_index']}", highlight=False, soft_wrap=True)
    for text, asked in run.asked_per_source.items():
        if not asked:
            out.print(f"  {text}: not asked (the local terms decided every applicant)",
                      highlight=False)


@query_app.command("cardinality")
def cardinality(config: ConfigOpt, partner: Partner, dataset: Dataset, purpose: Purpose,
                input_path: InputOpt, id_column: IdColumn,
                out_path: Annotated[Optional[Path], typer.Option(
                    "--out", help=f"Also write the count and its noise bound here. {FORMATS_HELP}")] = None,
                rejects: RejectsOpt = None, id_type: IdTypeOpt = IdType.CN_RESIDENT_ID,
                lang: LangOpt = Lang.zh, as_json: JsonOpt = False, encoding: str = "auto") -> None:
    """How many of the input are in a partner's dataset: the count only (maybe noised)."""
    from node.jobs.statistics import run_cardinality
    rejects = rejects or default_rejects(out_path)
    job = run_over_input(config, input_path, encoding, lambda ctx, source, bars: run_cardinality(
        ctx, partner=partner, dataset=dataset, purpose=purpose, source=source, id_column=id_column,
        id_type=id_type, out=out_path, rejects=rejects, lang=lang, progress=bars),
        say_nothing_written=False)
    r, facts = job.result, job.facts
    if as_json:
        return emit_json({**facts, "count": r.count, "noise_bound": r.noise_bound,
                          "out": out_path and str(out_path), "rejects": rejects and str(rejects)})
    noise = (f" (differentially private, epsilon {r.epsilon:g}; noise within ±{r.noise_bound})"
             if r.epsilon else " (exact)")
    out.print(f"query {r.query_id}: {r.count} of "
              f"{facts['asked']} distinct identifiers are in {partner}.{dataset}{noise}; "
              f"{rejects_line(job.listing.rejected, rejects)} (ledger #{facts['ledger_index']}, "
              f"{r.seconds:.2f} s)"
              + (f"; → {out_path}" if out_path else ""), highlight=False, soft_wrap=True)
