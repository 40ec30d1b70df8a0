"""What every command group shares: the typer apps, the consoles, opening a node, failing, progress bars.

Messages hold brackets of their own ("add a [[datasets]] entry", "[http]", a pattern like
'^[a-z][a-z0-9_-]{1,62}$'), so nothing here reads Rich markup: the consoles print text as
it is (``markup=False``; a style is given as a style, never inside the text) and help is
click's plain help (``rich_markup_mode=None``), where Rich markup would swallow "[rules]".
Results go to stdout, everything else (errors, warnings, progress) to stderr.
"""
from __future__ import annotations

import contextlib
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.text import Text
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.core.config import ConfigError, load_config
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
