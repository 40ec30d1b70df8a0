"""Files that may hold personal data: owner-only (0600, directories 0700) whatever the umask.

A node's data directory holds its database (identifiers, sealed or not, and the query
log), its key-encryption key, cached partner tables, and the operator's result files
name applicants. Each is created with its final mode (``os.open`` with 0600, then
``fchmod``, since a umask can only narrow the mode and an unusual one may be in force),
never chmod-ed after the data is in; and the node's processes run with umask 077
(:func:`restrict_umask`), so files that libraries create (SQLite's -wal and -shm, say)
are owner-only too.
"""
from __future__ import annotations

import os
import stat
from pathlib import Path

from sqlalchemy.engine import make_url

PRIVATE_UMASK = 0o077
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def restrict_umask() -> None:
    """Make every file and directory this process creates owner-only from now on."""
    os.umask(PRIVATE_UMASK)


def private_dir(path: str | os.PathLike[str]) -> Path:
    """Create ``path`` (and parents) if missing and make it 0700."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        os.chmod(path, 0o700)
    except PermissionError:  # another owner: acceptable only if it is closed already
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise PermissionError(f"directory {path} is open to group or others and this user "
                                  f"cannot close it; run `chmod 700 {path}` as its owner") from None
    return path


def open_private(path: str | os.PathLike[str], mode: str = "w", **kwargs):
    """``open(path, mode)`` for writing a file that is 0600 from its first byte.

    ``mode`` is "w"/"wb" (truncate) or "a"/"ab" (append); other arguments go to
    :func:`open` (encoding, newline). A symlink at ``path`` is refused.
    """
    if mode.replace("b", "") not in ("w", "a"):
        raise ValueError("open_private writes: mode is w, wb, a or ab")
    flags = os.O_WRONLY | os.O_CREAT | _NOFOLLOW | (os.O_APPEND if "a" in mode else os.O_TRUNC)
    fd = os.open(path, flags, 0o600)
    try:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, 0o600)  # an existing file keeps its mode through open(); narrow it
        return os.fdopen(fd, mode, **kwargs)
    except BaseException:
        os.close(fd)
        raise


def write_private(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` (0600) in place of its old content."""
    with open_private(path, "wb") as f:
        f.write(data)


def private_sqlite(url: str) -> None:
    """For a SQLite file database: create the file 0600 before SQLite does, and narrow
    an existing one and its journals. SQLite gives -wal and -shm the database's mode."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return
    if parsed.database.startswith("file:"):
        return  # a URI filename; its owner chose its place and mode
    db = Path(parsed.database)
    if not db.parent.is_dir():
        return  # SQLite says so when it opens
    os.close(os.open(db, os.O_WRONLY | os.O_CREAT | _NOFOLLOW, 0o600))
    for p in (db, *(db.with_name(db.name + s) for s in ("-wal", "-shm", "-journal"))):
        try:
            os.chmod(p, 0o600)
        except FileNotFoundError:
            pass
