"""`[sources]`: bounds on the files and tables datasets and input lists are read from, and
the named SQL sources a dataset may be registered from (`[[sources.sql]]`)."""
from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from node.core.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NamedSqlSource(_Strict):
    """A database table or query a dataset may be registered from by name: `[[sources.sql]]`
    (the console offers these; the CLI takes a URL with `--sql`). Read read-only, like
    `--sql` (adapters/sql_source.py). The URL may hold a password: keep it out of the file
    with `url_env`, the name of an environment variable of the serve process."""
    name: Annotated[str, Field(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
    description: str = ""
    url: str | None = None
    url_env: str | None = None
    table: str | None = None
    query: str | None = None

    @model_validator(mode="after")
    def _one_of_each(self) -> "NamedSqlSource":
        if (self.url is None) == (self.url_env is None):
            raise ValueError(f"sql source {self.name!r}: give exactly one of url or url_env")
        if (self.table is None) == (self.query is None):
            raise ValueError(f"sql source {self.name!r}: give exactly one of table or query")
        return self

    def database_url(self) -> str:
        """The SQLAlchemy URL (from the environment for `url_env`).

        Raises:
            ConfigError: `url_env` names a variable the process does not have.
        """
        import os
        value = self.url if self.url is not None else os.environ.get(self.url_env or "")
        if not value:
            raise ConfigError(f"sql source {self.name!r}: the environment variable {self.url_env} "
                              "is not set in the serve process")
        return value


class SourcesSection(_Strict):
    """Bounds on the files and tables a dataset or an input list is read from."""
    max_expanded_mib: int = Field(default=1024, ge=1)   # a workbook unpacked, in total
    max_compression_ratio: int = Field(default=100, ge=2)  # any workbook part over 8 MiB
    max_rows: int = Field(default=1_048_576, ge=1)      # of a worksheet (Excel's own limit)
    max_cell_chars: int = Field(default=32_767, ge=1)   # of a spreadsheet cell
    max_line_chars: int = Field(default=1 << 20, ge=1)  # of a CSV line
    sql: list[NamedSqlSource] = Field(default_factory=list)

    @field_validator("sql")
    @classmethod
    def _unique_names(cls, v: list[NamedSqlSource]) -> list[NamedSqlSource]:
        if len({s.name for s in v}) != len(v):
            raise ValueError("sql source names must be unique")
        return v

    def sql_source(self, name: str) -> NamedSqlSource | None:
        return next((s for s in self.sql if s.name == name), None)

    def limits(self):
        from adapters.limits import ReadLimits
        return ReadLimits(max_expanded_bytes=self.max_expanded_mib << 20,
                          max_member_ratio=self.max_compression_ratio, max_rows=self.max_rows,
                          max_cell_chars=self.max_cell_chars, max_line_chars=self.max_line_chars)
