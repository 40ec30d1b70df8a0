"""The data directory lock: exclusive, naming its holder, released however the holder ends."""
from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time

import pytest

from node.runtime.data_lock import LOCK_NAME, DataDirLock, DataDirLocked

HOLD = """
import sys, time
from node.runtime.data_lock import DataDirLock
DataDirLock(sys.argv[1], "shuqiao serve").acquire()
print("held", flush=True)
time.sleep(600)
"""


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    with DataDirLock(tmp_path / "node", "shuqiao serve") as first:
        assert first.held
        assert stat.S_IMODE((tmp_path / "node" / LOCK_NAME).stat().st_mode) == 0o600
        assert stat.S_IMODE((tmp_path / "node").stat().st_mode) == 0o700
        with pytest.raises(DataDirLocked) as refused:
            DataDirLock(tmp_path / "node", "shuqiao restore").acquire()
        message = str(refused.value)
        assert str(tmp_path / "node") in message
        assert f"shuqiao serve (pid {os.getpid()})" in message
        assert "\n" not in message
    with DataDirLock(tmp_path / "node", "shuqiao restore") as again:  # released on exit
        assert again.held


def test_a_killed_holder_releases_it(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE,
                              text=True, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DataDirLocked, match=f"pid {holder.pid}"):
            DataDirLock(tmp_path, "test").acquire()
        os.kill(holder.pid, signal.SIGKILL)
        holder.wait(10)
        deadline = time.monotonic() + 5
        while True:
            try:
                lock = DataDirLock(tmp_path, "test").acquire()
                break
            except DataDirLocked:
                assert time.monotonic() < deadline, "the kernel kept a dead process's lock"
                time.sleep(0.05)
        assert (tmp_path / LOCK_NAME).read_text() == f"{os.getpid()} test\n"
        lock.release()
    finally:
        holder.kill()
        holder.wait()


def test_a_symlinked_lock_file_is_not_followed(tmp_path):
    target = tmp_path / "elsewhere"
    target.write_text("not yours")
    (tmp_path / "node").mkdir()
    (tmp_path / "node" / LOCK_NAME).symlink_to(target)
    with pytest.raises(OSError):
        DataDirLock(tmp_path / "node", "test").acquire()
    assert target.read_text() == "not yours"
