"""A running node's config changed without a restart: `shuqiao reload`, or SIGHUP.

What changes live: the partners, every dataset and its grants (the policy), and the
query, maintenance, sources and predicate-table settings, the HTTP tokens and the
display name. What a running node cannot change: what it is and where its files are
(node id, mode, data directory, KEK file), its storage, its gRPC listener and call
limits, its TLS files, its HTTP listener and its log format. A reload that changes any
of those is refused, naming them, and the running config stays in force until a restart.

Applying a reload: the node reads its config file again (the one it started with),
validates it, ledgers it (`policy_changed` with the policy and config digests, in the
transaction that keeps it as the enforced policy), then puts it in force with one
assignment of `ctx.config`: every query admitted from then on reads the new grants,
and a query admitted before finishes under the grant it was admitted with. Anything
that fails before the swap leaves the old config in force, and says why.

`shuqiao reload` finds the running `serve` by the data directory's lock (never by a
pid file that may be stale), leaves a request with a fresh nonce in the data
directory, sends SIGHUP and waits for the node's status carrying that nonce. A bare
SIGHUP (`kill -HUP`, `systemctl reload`) is applied the same way; its status has no
nonce. Both files are owner-only and hold no personal data.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path

from node.core.config import ConfigError, DatasetSection, NodeConfig, load_config
from node.core.errors import ShuqiaoError
from node.runtime.admin_log import config_digest, enforced_policy, policy_digest, record_policy_if_changed
from node.runtime.context import NodeContext
from node.runtime.data_lock import holder
from node.storage.schema import write_private

REQUEST_NAME = "reload.request"
STATUS_NAME = "reload.status"
SERVE_HOLDER = "shuqiao serve"  # what `serve` writes in the lock file (node/server/serve.py)

# Settings a running node cannot take over: (section, fields; None for all of them).
RESTART_ONLY: tuple[tuple[str, tuple[str, ...] | None], ...] = (
    ("node", ("id", "mode", "data_dir", "kek_file")),
    ("storage", None),
    ("grpc", None),      # the listener, its threads, message sizes and call limits
    ("tls", None),       # the files are read once, when the listener is built
    ("http", ("listen", "tls", "plain_http_for_development")),
    ("logging", None),   # the log handler is set up once, when `serve` starts
)


class ReloadError(ShuqiaoError):
    """The running node could not be asked to reload, or did not answer."""


@dataclass(frozen=True)
class ReloadResult:
    """outcome: applied, unchanged or refused; message: one line for the operator and log."""
    outcome: str
    message: str
    policy_digest: str = ""
    config_digest: str = ""

    @property
    def ok(self) -> bool:
        return self.outcome != "refused"


def restart_needed(old: NodeConfig, new: NodeConfig) -> list[str]:
    """The restart-only settings that differ, as "section.field" names."""
    changed = []
    for section, names in RESTART_ONLY:
        a = getattr(old, section).model_dump(mode="json")
        b = getattr(new, section).model_dump(mode="json")
        changed += [f"{section}.{n}" for n in (names or a) if a[n] != b[n]]
    if old.base_dir != new.base_dir:  # relative paths would resolve elsewhere
        changed.append("the config file's directory")
    return changed


def changed_sections(old: NodeConfig, new: NodeConfig) -> list[str]:
    a, b = old.model_dump(mode="json"), new.model_dump(mode="json")
    return [name for name in a if a[name] != b[name]]


_applying = threading.Lock()  # one reload at a time (SIGHUP and HTTP alike)


def apply(ctx: NodeContext, new: NodeConfig, trigger: str) -> ReloadResult:
    """Put `new` in force on a running node, or keep the current config and say why.

    Raises nothing on a refusal (the result says it); an error while ledgering propagates
    with the old config still in force.
    """
    with _applying:
        old = ctx.config
        blocked = restart_needed(old, new)
        if blocked:
            return ReloadResult("refused", f"{', '.join(blocked)} changed, which takes a restart; "
                                           "the running config is kept (nothing was applied)",
                                policy_digest(old), config_digest(old))
        sections = changed_sections(old, new)
        if not sections:
            return ReloadResult("unchanged", "the config file holds the config in force",
                                policy_digest(old), config_digest(old))
        record_policy_if_changed(ctx, new, always=True, trigger=trigger,
                                 config_digest=config_digest(new), changed=",".join(sections)[:256])
        ctx.config = new  # one assignment: readers see the old config or the new one, whole
        addresses = {p.id: p.address for p in new.partners}
        for p in old.partners:  # a channel to a moved or removed partner is not reused
            if addresses.get(p.id) != p.address:
                ctx.channels.pop(p.id, None)
        return ReloadResult("applied", f"applied ({', '.join(sections)} changed)",
                            policy_digest(new), config_digest(new))


# -- the request and status files (shuqiao reload <-> the serving node) -----------------

def write_request(data_dir: Path, nonce: str, config_path: Path, actor: str | None = None) -> None:
    """`actor`: who asked, when not the OS account (a console user: "console:<token name>")."""
    _write_json(data_dir / REQUEST_NAME, {"nonce": nonce, "config": str(config_path),
                                          **({"actor": actor} if actor else {})})


def take_request(data_dir: Path) -> dict:
    """The pending request (removed), or {} for a bare SIGHUP."""
    path = data_dir / REQUEST_NAME
    try:
        request = json.loads(path.read_text(encoding="utf-8"))
        path.unlink()
    except (FileNotFoundError, ValueError):
        return {}
    return request if isinstance(request, dict) else {}


def write_status(data_dir: Path, result: ReloadResult, nonce: str, at: str) -> None:
    _write_json(data_dir / STATUS_NAME, {**asdict(result), "ok": result.ok, "nonce": nonce,
                                         "at": at, "pid": os.getpid()})


def read_status(data_dir: Path) -> dict | None:
    try:
        status = json.loads((data_dir / STATUS_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, ValueError):
        return None
    return status if isinstance(status, dict) else None


def _write_json(path: Path, body: dict) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    write_private(tmp, json.dumps(body, ensure_ascii=False).encode())
    os.replace(tmp, path)  # a reader sees the old file or the new one, never half of one


# -- asking the running node -------------------------------------------------------------

def running_serve(config: NodeConfig) -> int | None:
    """The pid of the `serve` holding this node's data directory, or None if none runs.

    Raises:
        ReloadError: the directory is held by another command (a restore, a key rotation).
    """
    held = holder(config.data_dir)
    if held is None:
        return None
    pid, what = held
    if what != SERVE_HOLDER or pid is None:
        raise ReloadError(f"the data directory {config.data_dir} is held by {what}"
                          f"{f' (pid {pid})' if pid else ''}, not by a serving node; try again later")
    return pid


def request_reload(config: NodeConfig, config_path: Path, timeout: float = 60.0,
                   actor: str | None = None) -> dict:
    """Signal the running node to reload and wait for its status (a dict, see write_status).
    The reload is ledgered as `actor`'s when given (the console asks for its user).

    Raises:
        ReloadError: no node serves this data directory, or it did not answer in time.
    """
    pid = running_serve(config)
    if pid is None:
        raise ReloadError(f"no node is serving {config.data_dir}; the config applies when "
                          "`shuqiao serve` starts")
    nonce = uuid.uuid4().hex
    write_request(config.data_dir, nonce, config_path.resolve(), actor)
    os.kill(pid, signal.SIGHUP)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = read_status(config.data_dir)
        if status is not None and status.get("nonce") == nonce:
            return status
        time.sleep(0.1)
    raise ReloadError(f"the node (pid {pid}) did not report within {timeout:g} s; see its log")


# -- what is enforced, and whether the file on disk says the same ------------------------

def file_warning(enforced_digest: str | None, path: Path | None) -> str | None:
    """A warning when the config file at `path` would enforce another policy than the
    one enforced (or does not load at all); None when they agree."""
    if path is None or enforced_digest is None:
        return None
    try:
        on_disk = policy_digest(load_config(path))
    except ConfigError as exc:
        first = str(exc).splitlines()[-1].strip()
        return (f"the config file {path} is not valid ({first}); the running node keeps the "
                "policy below until the file is fixed and reloaded")
    if on_disk == enforced_digest:
        return None
    return (f"the config file {path} differs from the policy the running node enforces "
            f"(file {on_disk[:12]}, enforced {enforced_digest[:12]}): the file is not in force "
            "until `shuqiao reload` applies it (or the node restarts)")


@dataclass(frozen=True)
class EnforcedView:
    """The datasets' policy in force: the running node's, else the file's (applied at start)."""
    running: bool
    datasets: list[DatasetSection]
    digest: str
    warning: str | None


def enforced_view(ctx: NodeContext, conn) -> EnforcedView:
    """For commands beside the node: the policy the running `serve` recorded as enforced
    (at its start or last reload), with a warning when the file differs; with no node
    running, the file's own policy (it is what the next start enforces)."""
    file_digest = policy_digest(ctx.config)
    try:
        running = running_serve(ctx.config) is not None
    except ReloadError:
        running = False
    digest, body = enforced_policy(conn) if running else (None, None)
    if not running or digest is None or digest == file_digest:
        return EnforcedView(running, list(ctx.config.datasets), file_digest, None)
    warning = file_warning(digest, ctx.config_path) or "the config file differs from the enforced policy"
    if body is None:  # recorded by a node that kept only the digest
        return EnforcedView(True, list(ctx.config.datasets), digest,
                            warning + "; the enforced policy itself was not recorded: the file's is shown")
    return EnforcedView(True, [DatasetSection.model_validate(d) for d in body["datasets"]],
                        digest, warning)
