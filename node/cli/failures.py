"""What a CLI user sees when a command fails unexpectedly: one clear line, never a traceback.

The common failures an operator can act on get their own sentence (a full disk, a
damaged or locked database, a damaged input file, a permission problem). Anything else
is an incident: the user gets its id, and the details (exception types and code
locations, never messages, which may hold personal data) go to the node's incident log
`<data_dir>/logs/incidents.log`, or to stderr with `shuqiao --debug`.
"""
from __future__ import annotations

import errno
import logging
import os
import zipfile
import zlib
from pathlib import Path

from node.core.incidents import describe, new_incident_id

log = logging.getLogger("shuqiao.incidents.cli")

# Set by the CLI: where the node keeps its files (once a config was read), and --debug.
state: dict = {"data_dir": None, "debug": False}


def _chain(exc: BaseException):
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _database_problem(exc: BaseException) -> str | None:
    try:
        from sqlalchemy.exc import DBAPIError
    except ImportError:  # pragma: no cover - sqlalchemy is a dependency
        return None
    for e in _chain(exc):
        if isinstance(e, DBAPIError):
            text = str(getattr(e, "orig", "") or "").lower()  # classified, never printed
            if "locked" in text or "busy" in text:
                return ("the node's database is locked by another process (is `shuqiao serve` "
                        "or another command still running?); try again when it has finished")
            if "full" in text or "no space" in text:
                return _DISK_FULL
            if ("not a database" in text or "malformed" in text or "corrupt" in text
                    or "disk i/o" in text):
                return ("the node's database is damaged (not a readable database file); "
                        "stop the node and restore node.db from a backup")
            if "readonly" in text or "read-only" in text or "permission" in text:
                return ("the node's database cannot be written (read-only file or directory); "
                        "check its owner and permissions")
            if "could not connect" in text or "connection refused" in text or "unable to open" in text:
                return ("the node's database cannot be opened or reached; check [storage] url "
                        "and that the database server is running")
            return None
    return None


_DISK_FULL = "no space left on the device; free some disk space and run the command again"


def _file_problem(exc: BaseException) -> str | None:
    for e in _chain(exc):
        if isinstance(e, OSError) and e.errno == errno.ENOSPC:
            return _DISK_FULL
        if isinstance(e, PermissionError):
            where = f" to {e.filename}" if e.filename else ""
            return f"permission denied{where}; check the file's owner and permissions"
        if isinstance(e, (zlib.error, zipfile.BadZipFile, zipfile.LargeZipFile)) \
                or type(e).__module__.startswith("openpyxl"):
            return ("the input file is damaged or is not a valid .xlsx workbook; open it in "
                    "Excel or LibreOffice, save it again as .xlsx, and retry")
        if isinstance(e, UnicodeDecodeError):
            return ("the input file is not in the expected text encoding; give --encoding "
                    "(utf-8, gb18030, ...) or save it as UTF-8")
    return None


def explain(exc: BaseException) -> str | None:
    """One actionable sentence for a failure the user can fix, or None."""
    return _file_problem(exc) or _database_problem(exc)


def _incident_log() -> logging.Logger:
    if log.handlers:
        return log
    log.propagate = False
    log.setLevel(logging.ERROR)
    handler: logging.Handler | None = None
    if state["debug"]:
        handler = logging.StreamHandler()
    elif state["data_dir"] is not None:
        try:
            directory = Path(state["data_dir"]) / "logs"
            directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            path = directory / "incidents.log"
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600))
            handler = logging.FileHandler(path, encoding="utf-8")
        except OSError:
            handler = None
    log.addHandler(handler or logging.NullHandler())
    if handler is not None:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return log


def report(exc: BaseException, command: str) -> tuple[str, int]:
    """The line to show for `exc` and the exit code; records an incident when needed."""
    incident = new_incident_id()
    try:
        _incident_log().error("incident %s in `%s`: %s", incident, command, describe(exc))
    except Exception:  # logging must never turn one failure into a traceback
        pass
    known = explain(exc)
    if known:
        return f"{known} (incident {incident})", 1
    if state["debug"]:
        where = "details above"
    elif state["data_dir"] is not None:
        where = f"details in {Path(state['data_dir']) / 'logs' / 'incidents.log'}"
    else:
        where = "run again with `shuqiao --debug ...` for details"
    return f"internal error; incident {incident} ({where})", 1
