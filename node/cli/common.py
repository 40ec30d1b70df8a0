"""What every command group shares: the typer apps, the consoles, opening a node, failing, progress bars,
and the options naming input lists and result files.

Messages hold brackets of their own ("add a [[datasets]] entry", "[http]", a pattern like
'^[a-z][a-z0-9_-]{1,62}$'), so nothing here reads Rich markup: the consoles print text as
it is (``markup=False``; a style is given as a style, never inside the text) and help is
click's plain help (``rich_markup_mode=None``), where Rich markup would swallow "[rules]".
Results go to stdout, everything else (errors, warnings, progress) to stderr.

Every command that reads an applicant list (queries of every kind, rules, the consent
audit) opens it with :func:`open_input` and reads it with ``adapters.read_applicants``,
so each one refuses the same rows for the same reasons -- an identifier Excel stored as
a number that lost digits among them. A result file's format follows its extension
(.csv, .xlsx, .json, .jsonl); its headers and answers are Chinese unless ``--lang en``
(README.md, "Result files").
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from adapters import IdType, SourceError, open_csv, open_xlsx

from node.core.config import ConfigError, load_config
from node.core.errors import PartnerError
from node.jobs.results import Lang
from node.runtime.context import NodeContext, NodeNotInitialised


def command_group(help: str, **kwargs) -> typer.Typer:
    """A command group whose help prints brackets as written (no Rich markup)."""
    return typer.Typer(no_args_is_help=True, rich_markup_mode=None, help=help, **kwargs)


app = command_group("Shuqiao (数桥): a privacy-preserving data-sharing node.",
                    add_completion=False, pretty_exceptions_enable=False)
ca_app = command_group("A pilot federation CA and node certificates.")
dataset_app = command_group("Register and manage datasets (agency admin).")
query_app = command_group("Ask partners (fund-centre operator).")
rule_app = command_group("Multi-agency eligibility rules (fund-centre operator).")
app.add_typer(ca_app, name="ca")
app.add_typer(dataset_app, name="dataset")
app.add_typer(query_app, name="query")
app.add_typer(rule_app, name="rule")

console = Console(stderr=True, markup=False)
out = Console(markup=False)

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Node config (TOML).",
                                         envvar="SHUQIAO_CONFIG")]


def labelled(label: str, style: str, message: str) -> Text:
    """``label`` in ``style``, then ``message`` exactly as written."""
    return Text.assemble((label, style), " ", message)


def error_line(message: str) -> None:
    console.print(labelled("error:", "bold red", message), highlight=False,
                  soft_wrap=True)  # one line, however long


def fail(message: str, code: int = 1) -> None:
    error_line(message)
    raise typer.Exit(code)


def warn(message: str) -> None:
    console.print(labelled("warning:", "bold yellow", message), highlight=False, soft_wrap=True)


def emit_json(value: Any) -> None:
    """A command's result as JSON on stdout (``--json``): no colour, no wrapping."""
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2, default=str) + "\n")


JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout.")]


@contextlib.contextmanager
def node_context(config: Path):
    try:
        ctx = NodeContext(load_config(config), config_path=config.resolve())
    except ConfigError as exc:
        fail(str(exc), 2)
    from node.cli.failures import state
    state["data_dir"] = ctx.config.data_dir  # where an unexpected failure's details go
    try:
        yield ctx
    except NodeNotInitialised as exc:
        fail(str(exc), 2)
    finally:
        ctx.close()


class Bars:
    """Turns (stage, done, total) progress callbacks into rich progress bars."""

    def __init__(self, enabled: bool = True) -> None:
        self.progress = Progress(TextColumn("{task.description:<10}"), BarColumn(),
                                 MofNCompleteColumn(), TimeElapsedColumn(), console=console,
                                 disable=not enabled or not console.is_terminal)
        self.tasks: dict[str, int] = {}

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=done, total=total)

    def __enter__(self) -> "Bars":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)


# -- input lists ----------------------------------------------------------------------

Partner = Annotated[str, typer.Option(help="Partner node id, e.g. hrss.")]
Dataset = Annotated[str, typer.Option(help="The partner's dataset, e.g. flexible_workers.")]
Purpose = Annotated[str, typer.Option(help="Purpose code granted by the partner.")]
InputOpt = Annotated[Path, typer.Option("--input", help="Applicant list (CSV or .xlsx).")]
IdColumn = Annotated[str, typer.Option(help="Identifier column of the input.")]
IdTypeOpt = Annotated[IdType, typer.Option()]


def open_input(path: Path, encoding: str = "auto"):
    """An operator's input list: .xlsx by its suffix, anything else as CSV."""
    if path.suffix.lower() == ".xlsx":
        return open_xlsx(path)
    return open_csv(path, encoding=encoding)


def run_over_input(config: Path, input_path: Path, encoding: str, job, *,
                   say_nothing_written: bool = True):
    """Open the node and the input list and return ``job(ctx, source, progress)``; a bad
    input or a refusal is the command's error (exit 2 for the operator's own mistakes)."""
    with node_context(config) as ctx:
        try:
            with open_input(input_path, encoding) as source, Bars() as bars:
                return job(ctx, source, bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except PartnerError as exc:
            fail(f"{exc}; nothing was written" if say_nothing_written else str(exc))


# -- result files ---------------------------------------------------------------------

FORMATS_HELP = "The extension picks the format: .csv, .xlsx, .json or .jsonl."
LangOpt = Annotated[Lang, typer.Option(
    "--lang", help="Language of the result file's headers and answers: zh (default) or en.",
    envvar="SHUQIAO_RESULT_LANG")]
RejectsOpt = Annotated[Optional[Path], typer.Option(
    help="Rows not asked (line, the row's other columns, reason; never the identifier); "
         "written even when empty. Default: <out>.rejected.<ext>.")]


def default_rejects(out: Path | None) -> Path | None:
    """result.xlsx -> result.rejected.xlsx: the rejects file next to the result, same format."""
    return out.with_name(f"{out.stem}.rejected{out.suffix}") if out else None


def rejects_line(rejected, rejects: Path | None) -> str:
    """A summary of the rows not asked; without a rejects file, the first few on stderr."""
    if rejects:
        return f"{len(rejected)} invalid rows not asked → {rejects}"
    for r in rejected[:5]:
        console.print(f"  line {r.line}: {r.reason}", highlight=False)
    return f"{len(rejected)} invalid rows not asked" + (
        " (first lines above; --rejects FILE lists all)" if rejected else "")
