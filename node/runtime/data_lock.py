"""One process owns a node's data directory at a time: `shuqiao serve`, or a command that must not run beside it.

Two `serve` processes on one data directory would both append to the ledger, both sign
heads and both answer partners from one set of quotas; `restore` replacing the database
under a running node, or `ledger rotate-key` changing the key a running node signs with,
would leave it serving something other than what is on disk. So each of these holds an
exclusive `fcntl.flock` on `<data_dir>/shuqiao.lock` while it runs.

flock is released by the kernel when the holder's file description closes, which happens
when the process exits however it exits (SIGKILL and power loss included): a stale lock
file never blocks a restart, and there is no pid file to clean up. The file holds the
holder's pid and what it is, only so that the refusal can name them. The lock is on an
open file description, so the spawned crypto workers (exec'd, close-on-exec) never
inherit it and a killed node's orphans cannot keep it.

Commands that are safe beside a running node (dataset registration and retirement, which
run in database transactions the server is built to see; backups, which read a snapshot)
do not take it.
"""
from __future__ import annotations

import errno
import fcntl
import os
from pathlib import Path

from node.core.errors import StorageError
from node.storage.schema import private_dir

__all__ = ["LOCK_NAME", "DataDirLocked", "DataDirLock", "holder"]

LOCK_NAME = "shuqiao.lock"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


class DataDirLocked(StorageError):
    """Another process holds the data directory; the message names it and its pid."""


def _read_holder(fd: int) -> tuple[int | None, str]:
    try:
        text = os.pread(fd, 256, 0).decode("utf-8", "replace").strip()
        pid, _, what = text.partition(" ")
        return int(pid), what or "another shuqiao process"
    except (OSError, ValueError):  # written a moment later by a holder that just locked it
        return None, "another shuqiao process"


class DataDirLock:
    """An exclusive, non-blocking lock on `data_dir`, held until `release()` or exit.

    Raises (from `acquire`):
        DataDirLocked: another process holds it.
    """

    def __init__(self, data_dir: str | os.PathLike[str], holder: str) -> None:
        self.data_dir = Path(data_dir)
        self.path = self.data_dir / LOCK_NAME
        self.holder = holder
        self._fd: int | None = None

    def acquire(self) -> "DataDirLock":
        private_dir(self.data_dir)
        # No O_TRUNC: the holder's pid must survive a second process opening the file.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | _NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise
                pid, what = _read_holder(fd)
                by = f"{what} (pid {pid})" if pid else what
                raise DataDirLocked(f"the data directory {self.data_dir} is in use by {by}; "
                                    f"stop it first") from None
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()} {self.holder}\n".encode(), 0)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Unlock. The file stays: removing it would let a third process lock a new inode
        while a second still waits on the old one."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            try:
                os.ftruncate(fd, 0)
            finally:
                os.close(fd)  # closing the description releases the flock

    @property
    def held(self) -> bool:
        return self._fd is not None

    def __enter__(self) -> "DataDirLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()



def holder(data_dir: str | os.PathLike[str]) -> tuple[int | None, str] | None:
    """Who holds `data_dir` now, as (pid, what), or None when no process does.

    The pid in the file alone proves nothing (a killed holder leaves it behind, and the
    number may since belong to another process), so the lock itself is probed: a shared
    lock that can be taken means nobody holds the exclusive one; it is dropped at once.
    """
    try:
        fd = os.open(Path(data_dir) / LOCK_NAME, os.O_RDONLY | _NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            return _read_holder(fd)
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)
