"""A batch job's applicant list: an uploaded file, or a named SQL source of the node.

Files are CSV (UTF-8, with or without a BOM, or GB18030 as Excel in China saves it) or
.xlsx; SQL sources are configured by name (`[[service.applicant_sources]]`,
node/core/service_config.py) and read read-only (adapters/sql_source.py). Either is read
by the one reader of applicant lists, ``adapters.read_applicants``, under the node's
bounds on sources (`[sources]`: a workbook's unpacked size, rows, cell and line lengths).

An uploaded file is read through once before its job is queued (:func:`check_list`), so
a file in the wrong encoding, a damaged or bomb-like workbook, or a missing column is
refused while the operator waits, with the reason, and nothing is kept.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from adapters import IdType, Source, SourceError, open_csv, open_sql, open_xlsx, read_applicants

from node.core.errors import ConfigError, InvalidInput
from node.runtime.context import NodeContext

# The uploaded file's extension names its format.
FILE_FORMATS = {".csv": "csv", ".txt": "csv", ".xlsx": "xlsx"}
ENCODINGS = ("auto", "utf-8", "gb18030")


class ListError(InvalidInput):
    """The applicant list cannot be used as given; the message says why (never a value)."""


@dataclass(frozen=True)
class ListSpec:
    """How to read an applicant list: its identifier column and type, and where it is.

    Attributes:
        id_column: the column holding each applicant's identifier.
        id_type: its type (an ``adapters.IdType`` value, e.g. "cn_resident_id").
        auth_column: a column with each applicant's authorisation reference, if the node
            requires one (`[query] require_authorisation`).
        source: a named SQL source; None when the list is an uploaded file.
        file_name: the uploaded file's name as the operator gave it (shown, never opened).
        file_format: "csv" or "xlsx" for an uploaded file.
        encoding: of a CSV file: "auto" (a BOM or valid UTF-8, else GB18030), "utf-8" or
            "gb18030".
        sheet: of a workbook: the worksheet (None: the first).
    """
    id_column: str
    id_type: str = IdType.CN_RESIDENT_ID.value
    auth_column: str | None = None
    source: str | None = None
    file_name: str | None = None
    file_format: str | None = None
    encoding: str = "auto"
    sheet: str | None = None

    def __post_init__(self) -> None:
        if not self.id_column.strip():
            raise ListError("name the identifier column (id_column)")
        try:
            IdType(self.id_type)
        except ValueError:
            raise ListError(f"unknown id_type {self.id_type!r}; use one of "
                            f"{', '.join(t.value for t in IdType)}") from None
        if (self.source is None) == (self.file_format is None):
            raise ListError("an applicant list is either an uploaded file or a named SQL source")
        if self.file_format is not None and self.file_format not in FILE_FORMATS.values():
            raise ListError("an uploaded list is a .csv or an .xlsx file")
        if self.encoding not in ENCODINGS:
            raise ListError(f"encoding is one of {', '.join(ENCODINGS)}")

    def params(self) -> dict:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_params(cls, params: dict) -> "ListSpec":
        return cls(**{k: params[k] for k in cls.__dataclass_fields__ if k in params})

    @property
    def stored_name(self) -> str | None:
        """The input file's name in the job's directory."""
        return f"input.{self.file_format}" if self.file_format else None


def file_format(name: str) -> str:
    """The format an uploaded file's name says ("csv" or "xlsx").

    Raises:
        ListError: any other extension (the old binary .xls among them).
    """
    fmt = FILE_FORMATS.get(Path(name).suffix.lower())
    if fmt is None:
        raise ListError(f"the applicant list {Path(name).name!r} is neither .csv nor .xlsx; "
                        "save it from Excel as .xlsx or as CSV (UTF-8 or the default Chinese CSV)")
    return fmt


def open_list(ctx: NodeContext, spec: ListSpec, path: Path | None) -> Source:
    """Open the list (`path`: the uploaded file's copy in the job's directory).

    Raises:
        ListError: an unknown SQL source, or the source cannot be opened.
    """
    limits = ctx.config.sources.limits()
    try:
        if spec.source is not None:
            named = ctx.config.service.applicant_source(spec.source)
            if named is None:
                known = ", ".join(s.name for s in ctx.config.service.applicant_sources) or "none"
                raise ListError(f"no applicant source named {spec.source!r} on this node "
                                f"(configured: {known})")
            try:
                url = named.database_url()
            except ConfigError as exc:
                raise ListError(str(exc)) from None
            return open_sql(url, table=named.table, query=named.query)
        assert path is not None
        if spec.file_format == "xlsx":
            return open_xlsx(path, spec.sheet, limits=limits)
        return open_csv(path, spec.encoding, limits=limits)
    except SourceError as exc:
        raise ListError(_named(str(exc), spec)) from None


def check_list(ctx: NodeContext, spec: ListSpec, path: Path | None,
               columns: tuple[str, ...] = ()) -> int:
    """Read the whole list once, as a job will; returns its data rows.

    Raises:
        ListError: the list cannot be read (encoding, damaged or oversized workbook,
            malformed CSV, a missing column among the identifier, authorisation and
            `columns`).
    """
    source = open_list(ctx, spec, path)
    try:
        with source:
            rows = 0
            for _ in read_applicants(source, spec.id_column, IdType(spec.id_type),
                                     auth_column=spec.auth_column, columns=columns):
                rows += 1
            return rows
    except SourceError as exc:
        raise ListError(_named(str(exc), spec)) from None


def _named(message: str, spec: ListSpec) -> str:
    """A reader's message about the stored copy, naming the file the operator sent."""
    if spec.file_name and spec.stored_name:
        return message.replace(f"'{spec.stored_name}'", repr(Path(spec.file_name).name))
    return message
