"""The operator's input lists on the command line: the options that name them, and
opening one (the rows not asked: node/cli/outputs.py).

Every command that reads an applicant list (queries of every kind, rules, the consent
audit) opens it with :func:`open_input` and reads it with ``adapters.read_applicants``,
so each one refuses the same rows for the same reasons -- an identifier Excel stored as
a number that lost digits among them.
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from adapters import IdType, open_csv, open_xlsx

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
    from adapters import SourceError
    from node.cli.common import Bars, fail, node_context
    from node.core.config import ConfigError
    from node.core.errors import PartnerError
    with node_context(config) as ctx:
        try:
            with open_input(input_path, encoding) as source, Bars() as bars:
                return job(ctx, source, bars)
        except (SourceError, ConfigError, ValueError) as exc:
            fail(str(exc), 2)
        except PartnerError as exc:
            fail(f"{exc}; nothing was written" if say_nothing_written else str(exc))
