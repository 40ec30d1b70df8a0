"""Result files on the command line: the options that name them, and the rows not asked.

A result file's format follows its extension (.csv, .xlsx, .json, .jsonl); its headers
and answers are Chinese unless ``--lang en`` (README.md, "Result files").
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from node.cli.common import console
from node.jobs.results import Lang

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
