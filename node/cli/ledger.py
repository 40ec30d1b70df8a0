"""`shuqiao ledger ...`: this node's ledger key, its certification and its rotation, and
following a partner's rotation."""
from __future__ import annotations

from typing import Annotated

import typer

from node.cli.common import ConfigOpt, app, command_group, console, fail, node_context, out

ledger_app = command_group("This node's ledger key: certification in the federation PKI, rotation.")
app.add_typer(ledger_app, name="ledger")


def _run(config, action):
    from node.core.config import ConfigError
    from node.ledger.anchor import CertificationError
    from node.keys.pki import TlsIdentityError
    with node_context(config) as ctx:
        try:
            return action(ctx)
        except (CertificationError, TlsIdentityError, ConfigError, OSError) as exc:
            fail(str(exc))


@ledger_app.command("certify")
def certify(config: ConfigOpt,
            force: Annotated[bool, typer.Option(help="Certify again even if a valid one exists.")] = False
            ) -> None:
    """Certify the ledger key with this node's TLS identity (`serve` also does it at start)."""
    from node.ledger.anchor import fingerprint
    from node.runtime.ledger_key import ensure_certified
    certification, new = _run(config, lambda ctx: ensure_certified(ctx, force=force))
    s = certification.statement
    out.print(f"{'certified' if new else 'already certified'}: {s.public_key.text} "
              f"({fingerprint(s.public_key)}) for node {s.node}, valid {s.not_before} to {s.not_after}")


@ledger_app.command("rotate-key")
def rotate_key(config: ConfigOpt) -> None:
    """Replace the ledger key (node stopped): certified, handed over by the old key, ledgered."""
    from node.ledger.anchor import fingerprint
    from node.runtime.data_lock import DataDirLock, DataDirLocked
    from node.runtime.ledger_key import rotate

    def locked_rotate(ctx):
        # A running node would keep signing with the key it loaded: refuse beside it.
        try:
            with DataDirLock(ctx.config.data_dir, "shuqiao ledger rotate-key"):
                return rotate(ctx)
        except DataDirLocked as exc:
            fail(f"{exc} (the ledger key is rotated with the node stopped)")
    old, new, _ = _run(config, locked_rotate)
    console.print("restart the node so that it signs with the new key")
    out.print(f"ledger key rotated: {fingerprint(old)} -> {fingerprint(new)}\nnew key {new.text}")


@ledger_app.command("key")
def key(config: ConfigOpt) -> None:
    """Print the ledger key, its fingerprint and its certification (give auditors the key)."""
    from node.ledger.anchor import current_certification, fingerprint

    def show(ctx):
        k = ctx.ledger.public_key
        c = current_certification(ctx.engine, k)
        out.print(f"{k.text}\n{fingerprint(k)}")
        out.print(f"certified until {c.statement.not_after}" if c else "not certified: run "
                  "`shuqiao ledger certify`")
    _run(config, show)


@ledger_app.command("follow-rotation")
def follow_rotation(config: ConfigOpt,
                    partner: Annotated[str, typer.Option(help="The partner whose key rotated.")]) -> None:
    """Move a partner's pinned ledger key to its new key, when the new key's certification
    (against this node's federation CA) names the pinned key as its predecessor."""
    from node.runtime import admin_log
    from node.core.errors import PartnerError
    from node.transport.channels import partner_channel
    from node.ledger.anchor import fingerprint, follow_partner_rotation, load_roots
    from node.ledger.grpc_service import GrpcLogSource
    from node.ledger.sources import SourceError

    def follow(ctx):
        try:
            source = GrpcLogSource(partner_channel(ctx, partner), partner)
            key, certification = source.public_key(), source.key_certification()
        except (SourceError, PartnerError) as exc:
            fail(f"cannot reach {partner}: {exc}")
        roots = load_roots(ctx.config.path(ctx.config.tls.ca))
        with ctx.engine.begin() as conn:
            old = follow_partner_rotation(conn, partner, key, certification, roots,
                                          now=ctx.ledger.now())
            admin_log.record(ctx, conn, "partner_key_rotated", partner, old_key=old.text,
                             new_key=key.text, certification=certification.digest())
        return old, key
    old, new = _run(config, follow)
    out.print(f"{partner}: pinned ledger key moved {fingerprint(old)} -> {fingerprint(new)}")
