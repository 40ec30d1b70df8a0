"""What every command group shares: the typer apps, the consoles, opening a node, failing, progress bars."""
from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from node.core.config import ConfigError, load_config
from node.runtime.context import NodeContext, NodeNotInitialised

app = typer.Typer(no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False,
                  help="Shuqiao (数桥): a privacy-preserving data-sharing node.")
ca_app = typer.Typer(no_args_is_help=True, help="A pilot federation CA and node certificates.")
dataset_app = typer.Typer(no_args_is_help=True, help="Register and manage datasets (agency admin).")
query_app = typer.Typer(no_args_is_help=True, help="Ask partners (fund-centre operator).")
rule_app = typer.Typer(no_args_is_help=True, help="Multi-agency eligibility rules (fund-centre operator).")
app.add_typer(ca_app, name="ca")
app.add_typer(dataset_app, name="dataset")
app.add_typer(query_app, name="query")
app.add_typer(rule_app, name="rule")

console = Console(stderr=True)
out = Console()

ConfigOpt = Annotated[Path, typer.Option("--config", "-c", help="Node config (TOML).",
                                         envvar="SHUQIAO_CONFIG")]


def fail(message: str, code: int = 1) -> None:
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)  # one line, however long
    raise typer.Exit(code)


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
