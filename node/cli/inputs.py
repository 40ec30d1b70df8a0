"""The operator's input lists on the command line: the options that name them, opening
one, and reporting the rows that were not asked.

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

from node.cli.common import console

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


def report_rejects(bad: list[tuple[int, str]], rejects: Path | None) -> str:
    """Write the rows not asked to ``rejects``, or show the first few; a summary line."""
    if rejects:
        from node.jobs.files import write_rejects
        write_rejects(rejects, bad)
        return f"{len(bad)} invalid rows not asked → {rejects}"
    for line, reason in bad[:5]:
        console.print(f"  line {line}: {reason}", highlight=False)
    return f"{len(bad)} invalid rows not asked (first lines above; --rejects FILE lists all)"
