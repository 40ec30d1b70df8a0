"""`shuqiao backup` and `shuqiao restore`: a node's data, keys and ledger, saved while it serves and
proven before they are served again (node/runtime/backup.py, node/runtime/restore.py)."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import ConfigOpt, app, console, fail, node_context, out, warn


@app.command()
def backup(config: ConfigOpt,
           out_dir: Annotated[Path, typer.Option("--out", help="A new directory for the backup.")],
           include_kek: Annotated[bool, typer.Option(
               "--include-kek", help="Also write the node's key-encryption key (kek/node.kek): "
                                     "whoever holds it and the backup can open everything.")] = False,
           ) -> None:
    """A consistent snapshot of the node while it serves (SQLite storage): database with the
    ledger and sealed keys, TLS identity, config, and a signed manifest."""
    from node.runtime.backup import take_backup
    from node.runtime.backup_manifest import KEK_FILE, BackupError
    with node_context(config) as ctx:
        try:
            result = take_backup(ctx, config, out_dir, include_kek=include_kek)
        except BackupError as exc:
            fail(str(exc))
        kek_path = ctx.config.kek_path
    out.print(f"backup of node {result.node} written to {result.path}: database "
              f"{result.database_bytes:,} bytes, ledger {result.ledger_size} entries (root "
              f"{result.ledger_root[:16]}…), manifest sha256:{result.manifest_sha256}",
              highlight=False, soft_wrap=True)
    if result.kek_included:
        warn(f"{result.path / KEK_FILE} is the node's key-encryption key: whoever holds it "
             "and this backup can open every sealed key and row. Store it apart from the "
             "backup (offline), and remove it from here once it is.")
    else:
        console.print(f"the node key is not in the backup; a restore needs it: keep a copy of "
                      f"{kek_path} apart from the backups", highlight=False, soft_wrap=True)


@app.command()
def restore(config: ConfigOpt,
            source: Annotated[Path, typer.Option("--from", help="A directory `shuqiao backup` wrote.")],
            force: Annotated[bool, typer.Option(
                help="Restore into a data directory that holds a (stopped) node: what is in the "
                     "way is moved aside, never deleted.")] = False) -> None:
    """Install a backup into a fresh data directory, after checking its manifest and digests,
    the whole ledger, the ledger key's certification and that the node key opens every
    sealed key. Nothing is installed if any check fails."""
    from node.core.config import ConfigError, load_config
    from node.runtime.backup_manifest import BackupError
    from node.runtime.data_lock import DataDirLocked
    from node.runtime.restore import restore as run
    try:
        cfg = load_config(config)
    except ConfigError as exc:
        fail(str(exc), 2)
    try:
        result = run(cfg, config, source, force=force)
    except DataDirLocked as exc:
        fail(f"{exc}; a node's data directory is restored with the node stopped")
    except BackupError as exc:
        fail(str(exc))
    out.print(f"restored node {result.node} from {source} (backup of {result.backup_created}, "
              f"ledger {result.ledger_size} entries, root {result.ledger_root[:16]}…): manifest "
              "signature and digests, sealed keys, the whole ledger and the ledger key's "
              f"certification verified. Start it with `shuqiao serve --config {config}`.",
              highlight=False, soft_wrap=True)
    if result.ca_from_backup:
        console.print(f"installed the backup's CA certificate at {cfg.path(cfg.tls.ca)} (there was "
                      "none): check it is your federation's", highlight=False, soft_wrap=True)
    if not result.config_matches:
        console.print("this config differs from the one backed up (config.toml in the backup); "
                      "`serve` ledgers a changed partner list or policy", highlight=False, soft_wrap=True)
    for path in result.moved_aside:
        console.print(f"moved aside: {path}", highlight=False)
    console.print("entries the node appended after the backup are not restored: its witnesses "
                  "will report a rollback until resolved (`shuqiao witness resolve`)",
                  highlight=False, soft_wrap=True)


@app.command()
def reload(config: ConfigOpt,
           timeout: Annotated[float, typer.Option(help="Seconds to wait for the node's answer.")] = 60.0,
           ) -> None:
    """Apply the edited config to the running node without a restart (node/runtime/live_config.py).

    The node reads its config file again, validates it and applies it (ledgered as
    policy_changed), or keeps the config in force and says why; exit code 1 then."""
    from node.core.config import ConfigError, load_config
    from node.runtime.live_config import ReloadError, request_reload
    try:
        cfg = load_config(config)
    except ConfigError as exc:  # the node would refuse it alike; it keeps its config
        fail(f"{exc}\nnothing was reloaded: the running node keeps the config in force", 2)
    try:
        status = request_reload(cfg, config, timeout)
    except ReloadError as exc:
        fail(str(exc))
    if not status.get("ok"):
        fail(f"the node refused the reload: {status.get('message', '')}")
    out.print(f"node {cfg.node.id} (pid {status.get('pid')}): {status.get('message', '')}; "
              f"policy {str(status.get('policy_digest', ''))[:12]} is enforced", highlight=False,
              soft_wrap=True)
