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
    # Uploaded applicant lists and job results are kept this long after a job ends,
    # then deleted (the deletion is ledgered).
    result_retention_hours: float = Field(default=72.0, gt=0, le=24 * 365)
    max_upload_mib: int = Field(default=64, ge=1, le=4096)
    # Jobs run one at a time per node in this many worker threads.
    job_workers: int = Field(default=1, ge=1, le=16)
    # A console session ends after this many minutes, or this many idle.
    session_minutes: int = Field(default=480, ge=5, le=7 * 24 * 60)
    session_idle_minutes: int = Field(default=60, ge=1, le=24 * 60)
    # How long an Idempotency-Key and its answer are remembered.
    idempotency_hours: float = Field(default=24.0, gt=0, le=24 * 30)
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
