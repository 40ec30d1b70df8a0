"""Ledger alarms: a conflict between two signed heads is never silent.

Every rollback, fork or inconsistency a witness records (about a partner, or about this
node's own log, learned from a partner's cosignatures) goes through `raise_alarm`: one
ERROR log line naming the log, the kind and the tree sizes -- never an entry, an
identifier or a value -- and the `shuqiao_ledger_conflicts_total` counter, served on the
node's HTTP `/metrics` route. The evidence itself is in the witness tables, exports and
the auditor APIs (witness_evidence.py).
"""
from __future__ import annotations

import logging

from prometheus_client import CollectorRegistry, Counter, Gauge

__all__ = ["REGISTRY", "CONFLICTS", "OPEN", "ROUNDS", "raise_alarm"]

log = logging.getLogger("shuqiao.alarm")

# One registry per process, separate from prometheus_client's default (which also
# carries process collectors): /metrics serves exactly the node's own series.
REGISTRY = CollectorRegistry(auto_describe=True)
CONFLICTS = Counter("shuqiao_ledger_conflicts", "Ledger conflicts recorded by this node as a witness "
                    "(rollback, fork, inconsistent), by log and kind", ["log", "kind"],
                    registry=REGISTRY)
OPEN = Gauge("shuqiao_ledger_open_conflicts", "Ledger conflicts on record and not yet resolved "
             "(set by every witnessing round)", registry=REGISTRY)
# Counted by node/server/witnessing.py; a partner failing round after round is the early
# sign of a log that goes unwitnessed.
ROUNDS = Counter("shuqiao_witness_rounds", "Witnessing rounds with a partner, by result (ok, "
                 "or failed after its retries)", ["partner", "result"], registry=REGISTRY)


def raise_alarm(log_node: str, kind: str, first_size: int, second_size: int, source: str) -> None:
    """Log and count one newly recorded conflict (metadata only)."""
    CONFLICTS.labels(log=log_node, kind=kind).inc()
    log.error("LEDGER ALARM: %s of the ledger of %s (tree sizes %d and %d), %s; both signed "
              "heads are kept as evidence (`shuqiao audit verify`, `shuqiao witness status`)",
              kind, log_node, first_size, second_size, source)
