"""How the node's log lines look: plain text for a terminal, or JSON lines for a log shipper.

`serve --log-format json` (or `[logging] format = "json"`) writes one JSON object a line:
time (UTC, ISO 8601), level, logger and message, plus the fields a line carries for
machines (`extra=` of the logging call): the query id, the partner and the other
metric labels of a recorded query (node/policy/querylog.py), an incident id. An
exception adds only its type: its message may hold SQL parameters or cell values
(the incident's own line already names the code locations, node/core/incidents.py).
Identifier-shaped digit runs in a message are redacted, as in the ledger
(node/ledger/canonical.py), should one ever slip into a message.
"""
from __future__ import annotations

import json
import logging
import re
import sys
from datetime import datetime, timezone

__all__ = ["FIELDS", "JsonFormatter", "TEXT_FORMAT", "configure"]

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# Attributes a logging call may attach with `extra=`, copied into the JSON event.
FIELDS = ("query_id", "partner", "role", "kind", "dataset", "purpose", "outcome", "elements",
          "seconds", "incident")
_ID_LIKE = re.compile(r"(?<!\d)\d{14,}[\dXxＸｘ](?!\d)")  # as node/ledger/canonical.py


class JsonFormatter(logging.Formatter):
    """One JSON object per record, on one line (newlines in a message stay escaped)."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, timezone.utc)
        event = {"time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                 "level": record.levelname.lower(), "logger": record.name,
                 "message": _ID_LIKE.sub("[redacted]", record.getMessage())}
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                event[name] = value
        if record.exc_info and record.exc_info[0] is not None:
            event["exception"] = record.exc_info[0].__name__
        return json.dumps(event, ensure_ascii=False, separators=(",", ":"), default=str)


def configure(format: str = "text", level: int | None = None) -> None:
    """Point the root logger at stderr in `format` ("text" or "json"), replacing its handlers."""
    if format not in ("text", "json"):
        raise ValueError("the log format is text or json")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if format == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    if level is not None:
        root.setLevel(level)
