"""`shuqiao dataset ...`: register, list, show and retire dataset versions."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text

from adapters import IdType, SourceError, open_csv, open_sql, open_xlsx

from node.cli.common import (Bars, ConfigOpt, JsonOpt, console, dataset_app, emit_json, fail,
                             node_context, out, warn)
from node.datasets.registration import RegistrationError, list_versions, register, retire


def open_source(csv_path: Optional[Path], xlsx_path: Optional[Path], sql_url: Optional[str],
                table: Optional[str], query: Optional[str], sheet: Optional[str], encoding: str,
                limits=None):
    given = [x for x in (csv_path, xlsx_path, sql_url) if x]
    if len(given) != 1:
        fail("give exactly one source: --csv FILE, --xlsx FILE or --sql URL (with --table or --query)", 2)
    if csv_path:
        return "csv", str(csv_path), open_csv(csv_path, encoding=encoding,
                                              **({"limits": limits} if limits else {}))
    if xlsx_path:
        return "xlsx", str(xlsx_path), open_xlsx(xlsx_path, sheet=sheet,
                                                 **({"limits": limits} if limits else {}))
    if bool(table) == bool(query):
        fail("with --sql give exactly one of --table or --query", 2)
    label = f"{sql_url.split('@')[-1]} {'table ' + table if table else 'query'}"
    return "sql", label, open_sql(sql_url, table=table, query=query)


def _report_invalid(invalid, target: Path, name: str, version: int) -> None:
    if not invalid:
        return
    from node.storage.result_files import ResultInfo, ResultTable, write_result
    write_result(target, ResultTable(["line", "reason"], ((r.line, r.reason) for r in invalid),
                                     "rejected"),
                 ResultInfo({"dataset": name, "version": version, "rejected": len(invalid)}))
    console.print(Text(f"{len(invalid)} invalid row(s) not registered", "yellow"),
                  f"; line numbers and reasons in {target}", sep="")
    for r in invalid[:5]:
        console.print(f"  line {r.line}: {r.reason}")


@dataset_app.command("add")
def add(config: ConfigOpt,
        name: Annotated[str, typer.Option(help="Dataset name declared in the config.")],
        id_column: Annotated[str, typer.Option(help="Column holding the identifier.")],
        id_type: Annotated[IdType, typer.Option(help="Identifier type.")] = IdType.CN_RESIDENT_ID,
        attribute: Annotated[list[str], typer.Option(help="Attribute column to keep (repeatable).")] = [],
        csv_path: Annotated[Optional[Path], typer.Option("--csv", help="CSV file.")] = None,
        encoding: Annotated[str, typer.Option(help="auto, utf-8, utf-8-sig, gb18030, gbk.")] = "auto",
        xlsx_path: Annotated[Optional[Path], typer.Option("--xlsx", help="Excel .xlsx file.")] = None,
        sheet: Annotated[Optional[str], typer.Option(help="Worksheet (default: the first).")] = None,
        sql: Annotated[Optional[str], typer.Option(help="SQLAlchemy URL.")] = None,
        table: Annotated[Optional[str], typer.Option(help="Table to read (with --sql).")] = None,
        query: Annotated[Optional[str], typer.Option(help="SELECT to run (with --sql).")] = None,
        strict: Annotated[bool, typer.Option(help="Abort if any row is invalid.")] = False,
        rejects: Annotated[Optional[Path], typer.Option(help="Write invalid rows (line, reason) here.")] = None,
        ) -> None:
    """Register a new immutable version of a dataset from CSV, Excel or SQL."""
    with node_context(config) as ctx:
        try:
            kind, label, source = open_source(csv_path, xlsx_path, sql, table, query, sheet, encoding,
                                              ctx.config.sources.limits())
            with source, Bars() as bars:
                result = register(ctx, name, source, id_column=id_column, id_type=id_type,
                                  attributes=attribute, strict=strict, source_kind=kind,
                                  source_label=label, progress=bars)
        except (SourceError, RegistrationError) as exc:
            line = getattr(exc, "line", None)
            fail(f"{exc}" + (f" (line {line})" if line and f"line {line}" not in str(exc) else "")
                 + "; nothing was registered")
    _report_invalid(result.invalid, rejects or Path(f"{name}-v{result.version}-rejected.csv"),
                    name, result.version)
    tables = ", ".join(f"{p} (epoch {e})" for p, e in result.tag_tables) or "none (no grants)"
    out.print(f"registered {name} version {result.version}: {result.row_count} rows; "
              f"tag tables for {tables}; source sha256 {result.fingerprint[:16]}…")


def _version(v) -> dict:
    """One version as --json prints it."""
    return {"dataset": v.name, "version": v.version, "status": v.status, "id_type": v.id_type,
            "id_column": v.id_column, "attributes": v.attributes, "rows": v.row_count,
            "invalid": v.invalid_count, "source_kind": v.source_kind, "source": v.source_label,
            "source_sha256": v.source_fingerprint, "registered_at": v.created_at.isoformat()}


@dataset_app.command("list")
def list_(config: ConfigOpt, as_json: JsonOpt = False) -> None:
    """Every dataset version this node holds."""
    with node_context(config) as ctx, ctx.engine.connect() as conn:
        versions = list_versions(conn)
    if as_json:
        return emit_json([_version(v) for v in versions])
    t = Table("dataset", "version", "id type", "rows", "invalid", "source", "status", "registered")
    for v in versions:
        t.add_row(v.name, str(v.version), v.id_type, str(v.row_count), str(v.invalid_count),
                  v.source_kind, v.status, v.created_at.strftime("%Y-%m-%d %H:%M"))
    out.print(t)


@dataset_app.command("show")
def show(config: ConfigOpt, name: str, as_json: JsonOpt = False) -> None:
    """Versions, grants and source details of one dataset."""
    from node.runtime.live_config import enforced_view
    with node_context(config) as ctx, ctx.engine.connect() as conn:
        versions = list_versions(conn, name)
        view = enforced_view(ctx, conn)  # the running node's policy, not merely the file's
    declared = next((d for d in view.datasets if d.name == name), None)
    if view.warning:
        warn(view.warning)
    if not versions and declared is None:
        fail(f"no dataset {name!r}" + (" in the enforced policy" if view.running else ""))
    if as_json:
        return emit_json({"dataset": name, "policy": view.digest, "enforced": view.running,
                          "declared": declared.model_dump(mode="json") if declared else None,
                          "versions": [_version(v) for v in versions]})
    out.print(f"policy {view.digest[:12]}: "
              + ("enforced by the running node" if view.running else
                 "from the config file (no node is running; it applies when one starts)"),
              highlight=False)
    if declared:
        out.print(Text(name, "bold"), declared.description)
        out.print(f"  key epochs of {declared.epoch_days} days, previous epoch answers "
                  f"{declared.grace_days} more days")
        for g in declared.grants:
            purposes = ", ".join(f"{p.code} ({p.legal_basis})" if p.legal_basis else p.code
                                 for p in g.purposes)
            out.print(f"  grant: {g.partner} for {purposes}")
            quotas = ", ".join(f"{n} {v}" for n, v in (("daily", g.daily_elements),
                               ("monthly", g.monthly_elements), ("per epoch", g.epoch_elements)) if v)
            out.print(f"    kinds {', '.join(k.value for k in g.kinds)}; "
                      f"{g.min_elements}..{g.max_elements} elements per query; "
                      f"quotas: {quotas or 'none'}")
            if g.predicate_columns:
                out.print(f"    predicates may use: {', '.join(g.predicate_columns)}")
            if g.label_attributes:
                out.print(f"    labels may open: {', '.join(g.label_attributes)}")
    for v in versions:
        out.print(f"  v{v.version} {v.status}: {v.row_count} rows ({v.invalid_count} invalid), "
                  f"{v.id_type} from column {v.id_column!r}, attributes {v.attributes or '-'}, "
                  f"{v.source_kind} {v.source_label}, sha256 {v.source_fingerprint}, "
                  f"registered {v.created_at:%Y-%m-%d %H:%M:%S}")


def _on_version(config: Path, action, name: str, version: int):
    """``action(ctx, name, version)`` on this node; a refusal is the command's error."""
    with node_context(config) as ctx:
        try:
            return action(ctx, name, version)
        except RegistrationError as exc:
            fail(str(exc))


@dataset_app.command("retire")
def retire_(config: ConfigOpt, name: str,
            version: Annotated[int, typer.Option(help="Version to retire.")]) -> None:
    """Stop serving a version to partners (its record stays)."""
    current = _on_version(config, retire, name, version)
    out.print(f"retired {name} version {version}; "
              + (f"partners are served version {current.version}" if current else
                 "no active version is left: partners are served none"))


@dataset_app.command("purge")
def purge_(config: ConfigOpt, name: str,
           version: Annotated[int, typer.Option(help="Retired version to purge.")]) -> None:
    """Delete a retired version's personal data: its rows and every table built from them."""
    from node.datasets.registration import purge
    rows = _on_version(config, purge, name, version)
    out.print(f"purged {name} version {version}: {rows} rows and their tag and threshold "
              "tables deleted; the version's record and ledger entries stay")


@dataset_app.command("rotate-key")
def rotate_key(config: ConfigOpt, name: Annotated[str, typer.Option(help="Dataset.")],
               partner: Annotated[Optional[str], typer.Option(help="Only this partner.")] = None) -> None:
    """Start a new key epoch now (partners re-sync; the old epoch answers for the grace period)."""
    from node.datasets.epochs import RotationError, rotate
    with node_context(config) as ctx:
        try:
            with Bars() as bars:
                done = rotate(ctx, name, partner, progress=bars)
        except RotationError as exc:
            fail(str(exc))
        grace = ctx.config.dataset(name).grace_days
    for r in done:
        out.print(f"{r.dataset}: partner {r.partner} now on key epoch {r.epoch} "
                  f"({r.rows} tags rebuilt); epoch {r.epoch - 1} answers {grace} more days")


@dataset_app.command("prepare")
def prepare_(config: ConfigOpt, name: Annotated[str, typer.Option(help="Dataset.")]) -> None:
    """Prepare the current version's threshold tables that are missing (registration,
    refresh and key rotation prepare them already; a grant that gained `threshold` later
    needs this, or is prepared in the background on its first request)."""
    from node.datasets.epochs import prepare_current
    with node_context(config) as ctx:
        try:
            with Bars() as bars:
                done = prepare_current(ctx, name, progress=bars)
        except ValueError as exc:
            fail(str(exc))
    if not done:
        out.print(f"{name}: no grant has the threshold kind with a registered threshold_column")
    for target, table in done:
        out.print(f"{name} v{target.version}: threshold table for {target.partner} "
                  f"(epoch {target.epoch}, column {target.column}): {table.rows} rows, "
                  f"{table.unusable} without a usable income")


@dataset_app.command("update")
def update_(config: ConfigOpt, name: Annotated[str, typer.Option(help="Dataset to refresh.")],
            id_column: Annotated[str, typer.Option(help="Identifier column of both files.")],
            add: Annotated[Optional[Path], typer.Option(help="CSV/.xlsx of rows to add.")] = None,
            remove: Annotated[Optional[Path], typer.Option(help="CSV/.xlsx of identifiers to remove.")] = None,
            encoding: str = "auto",
            rejects: Annotated[Optional[Path], typer.Option(help="Write invalid rows here.")] = None) -> None:
    """A new version from the current one plus additions minus removals (partners sync a delta)."""
    from adapters import open_source as open_file
    from node.datasets.registration import refresh
    if add is None and remove is None:
        fail("give --add FILE and/or --remove FILE", 2)
    opened = []
    with node_context(config) as ctx:
        try:
            limits = {} if "://" in f"{add}{remove}" else {"limits": ctx.config.sources.limits()}
            sources = {k: open_file(str(v), **limits, **({"encoding": encoding} if str(v).lower().endswith(
                (".csv", ".tsv", ".txt")) else {})) for k, v in (("add", add), ("remove", remove)) if v}
            opened = list(sources.values())
            with Bars() as bars:
                r = refresh(ctx, name, add=sources.get("add"), remove=sources.get("remove"),
                            id_column=id_column, progress=bars)
        except (SourceError, RegistrationError) as exc:
            fail(f"{exc}; nothing was registered")
        finally:
            for src in opened:
                src.close()
    _report_invalid(r.invalid, rejects or Path(f"{name}-v{r.version}-rejected.csv"), name,
                    r.version)
    out.print(f"refreshed {name}: version {r.version} from v{r.base_version}: {r.row_count} rows "
              f"(+{r.added} -{r.removed}); partners sync the difference")
