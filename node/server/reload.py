"""SIGHUP in `shuqiao serve`: read the config file again and apply it (node/runtime/live_config.py).

The signal handler only sets an event; a thread of its own does the work (reading,
validating, ledgering), so a reload never runs inside a signal handler nor blocks the
gRPC threads. After the context's config is swapped, the parts of the server that
copied something from the config at start take the new values: the interceptor's
partner and auditor lists, and the HTTP API's tokens. Every reload ends in one log line
and one status file (`shuqiao reload` waits for it); a refused one keeps the old config.
"""
from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from node.core.config import ConfigError, NodeConfig, load_config
from node.runtime import live_config
from node.runtime.admin_log import acting_as
from node.runtime.context import NodeContext

log = logging.getLogger(__name__)


class Reloader:
    """Applies the config file on SIGHUP; `on_applied(config)` updates what copied the old one."""

    def __init__(self, ctx: NodeContext) -> None:
        self.ctx = ctx
        self.requested = threading.Event()
        self.on_applied: list[Callable[[NodeConfig], None]] = []

    def install(self) -> None:
        """Take SIGHUP (whose default would end the process) from now on; main thread only."""
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGHUP, lambda *_: self.requested.set())

    def run(self, stop: threading.Event) -> None:
        """Until `stop`: one reload per SIGHUP (signals arriving meanwhile make one more)."""
        while not stop.is_set():
            if self.requested.wait(0.5):
                self.requested.clear()
                self.reload()

    def reload(self) -> live_config.ReloadResult:
        data_dir = self.ctx.config.data_dir
        request = live_config.take_request(data_dir)
        try:
            with acting_as(str(request.get("actor") or "") or None):
                result = self._apply(request)
        except Exception as exc:  # the old config stays; the details go to the log only
            from node.core.incidents import opaque_message, record
            result = live_config.ReloadResult(
                "refused", f"{opaque_message(record('a config reload', exc, log))}; "
                           "the running config is kept")
        (log.info if result.ok else log.warning)("config reload (%s): %s", _trigger(request),
                                                 result.message)
        live_config.write_status(data_dir, result, str(request.get("nonce", ""))[:64],
                                 self.ctx.clock.now().isoformat())
        return result

    def _apply(self, request: dict) -> live_config.ReloadResult:
        own = self.ctx.config_path
        if own is None:
            return live_config.ReloadResult("refused", "this node was not started from a config "
                                                       "file; restart it to change its config")
        named = request.get("config")
        if named and Path(named).resolve() != own:
            return live_config.ReloadResult(
                "refused", f"this node serves the config {own}, not {named}; a reload reads the "
                           "file the node was started with")
        try:
            new = load_config(own)
        except ConfigError as exc:
            return live_config.ReloadResult("refused", f"{exc}\nthe running config is kept")
        result = live_config.apply(self.ctx, new, _trigger(request))
        if result.outcome == "applied":
            for update in self.on_applied:
                update(new)
        return result


def _trigger(request: dict) -> str:
    if str(request.get("actor") or "").startswith("console:"):
        return "console"
    return "reload" if request.get("nonce") else "sighup"
