"""The fixed choices of command-line options, as enums: `--help` lists them, and typer refuses
anything else with the choices named, before a command opens the node."""
from __future__ import annotations

import enum


class MembershipKind(str, enum.Enum):
    MEMBERSHIP = "membership"  # which applicants are in the dataset
    LABELED = "labeled"        # and the allow-listed attributes of matched rows
    PREDICATE = "predicate"    # membership in the rows satisfying --predicate
    BULK = "bulk"              # the whole list at once (bulk PSI)


class RowSelection(str, enum.Enum):
    ALL = "all"                    # every valid row, each with its answer
    INTERSECTION = "intersection"  # the rows in the dataset
    DIFFERENCE = "difference"      # the rows not in it


class AggregateOp(str, enum.Enum):
    COUNT = "count"
    SUM = "sum"
    MEAN = "mean"


class TokenRole(str, enum.Enum):
    """Who holds a token: what it opens on the HTTP listener and in the console."""
    OPERATOR = "operator"  # real-time checks and batch jobs (/v1/checks, /v1/jobs), operator pages
    AUDITOR = "auditor"    # /v1/ledger and /metrics, auditor pages
    ADMIN = "admin"        # /v1/admin, admin pages
    METRICS = "metrics"    # /metrics only (a monitoring system's scraper)


class LogFormat(str, enum.Enum):
    TEXT = "text"  # for a terminal or journald
    JSON = "json"  # one JSON object a line, for a log shipper (node/core/logs.py)


class LedgerCheck(str, enum.Enum):
    TAIL = "tail"  # the latest head and the last 4,096 entries
    FULL = "full"  # every entry recomputed, as `audit check` does
