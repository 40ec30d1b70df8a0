"""The service API's and the console's settings: tokens with roles and scopes, jobs, sessions.

A token is configured by its SHA-256 digest only (`shuqiao token new` prints one); its
name is what logs, the ledger and the console show of whoever holds it.
"""
from __future__ import annotations

import enum
import re
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator

from node.core.source_config import NamedSqlSource

TOKEN_NAME = r"^[a-z0-9][a-z0-9._-]{1,62}$"
PURPOSE = r"^[a-z0-9][a-z0-9._-]{1,62}$"


class Role(str, enum.Enum):
    """What a token or a console session opens."""
    OPERATOR = "operator"  # the fund centre's business system and officers: checks, jobs
    ADMIN = "admin"        # the agency's administrators: datasets, grants, policy
    AUDITOR = "auditor"    # the ledger, proofs, cross-checks, statistics of use
    METRICS = "metrics"    # /metrics only (a monitoring system's scraper)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TokenEntry(_Strict):
    """One holder of a bearer token: `[[http.tokens]]`."""
    name: Annotated[str, Field(pattern=TOKEN_NAME)]
    digest: str
    role: Role
    # Scopes: the purposes an operator may state and the rules it may run (empty: any).
    purposes: list[Annotated[str, Field(pattern=PURPOSE)]] = Field(default_factory=list)
    rules: list[str] = Field(default_factory=list)
    # Requests per minute this token may make (a burst of this many, refilled evenly).
    requests_per_minute: int = Field(default=600, ge=1, le=100_000)

    @field_validator("digest")
    @classmethod
    def _digest(cls, v: str) -> str:
        if not re.fullmatch(r"sha256:[0-9a-f]{64}", v):
            raise ValueError("tokens are configured as sha256:<64 hex> digests, never in clear")
        return v


class ServiceSection(_Strict):
    """`[service]`: real-time checks, batch jobs and the console."""
    # The rule file (node/rules/rulefile.py) whose rules checks and jobs may run.
    rules_file: Path | None = None
    # A real-time check reuses a partner's description of a dataset (version, key epoch,
    # table digest) fetched this many seconds ago or less, instead of listing it again
    # per applicant; a query on a version no longer served is asked again (0: always list).
    listing_cache_seconds: float = Field(default=10.0, ge=0, le=3600)
    # Uploaded applicant lists and job results are kept this long after a job ends,
    # then deleted (the deletion is ledgered).
    result_retention_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    max_upload_mib: int = Field(default=64, ge=1, le=4096)
    # Batch jobs run in this many worker threads of `shuqiao serve`, one job each at a time.
    job_workers: int = Field(default=1, ge=1, le=16)
    # A console session ends after this many minutes, or this many idle.
    session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # How long an Idempotency-Key and its answer are remembered.
    idempotency_hours: float = Field(default=24.0, gt=0, le=24 * 30)
    # How often the serve process looks for job files past their retention.
    retention_check_seconds: float = Field(default=60.0, ge=0.5, le=24 * 3600)
    # Named SQL sources a batch job may read its applicants from (the same form as the
    # datasets' `[[sources.sql]]`: a table or a SELECT, its URL in the file or the environment).
    applicant_sources: list[NamedSqlSource] = Field(default_factory=list)
    # The console counts queries per calendar day in this time zone (IANA name); times
    # are stored and signed in UTC.
    console_timezone: str = "Asia/Shanghai"

    @field_validator("console_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as Asia/Shanghai)") from None
        return value

    @field_validator("applicant_sources")
    @classmethod
    def _unique_sources(cls, v: list[NamedSqlSource]) -> list[NamedSqlSource]:
        names = [s.name for s in v]
        if len(set(names)) != len(names):
            raise ValueError("applicant source names must be unique")
        return v

    def applicant_source(self, name: str) -> NamedSqlSource | None:
        return next((s for s in self.applicant_sources if s.name == name), None)
