"""`shuqiao ledger ...`: this node's ledger key, its certification and its rotation."""
from __future__ import annotations

from typing import Annotated

import typer

from .cli import ConfigOpt, app, console, fail, node_context, out

ledger_app = typer.Typer(no_args_is_help=True,
                         help="This node's ledger key: certification in the federation PKI, rotation.")
app.add_typer(ledger_app, name="ledger")


def _run(config, action):
    from .ledger.anchor import CertificationError
    from .pki import TlsIdentityError
    with node_context(config) as ctx:
        try:
            return action(ctx)
        except (CertificationError, TlsIdentityError, OSError) as exc:
            fail(str(exc))


@ledger_app.command("certify")
def certify(config: ConfigOpt,
            force: Annotated[bool, typer.Option(help="Certify again even if a valid one exists.")] = False
            ) -> None:
    """Certify the ledger key with this node's TLS identity (`serve` also does it at start)."""
    from .ledger.anchor import fingerprint
    from .ledger_keys import ensure_certified
    certification, new = _run(config, lambda ctx: ensure_certified(ctx, force=force))
    s = certification.statement
    out.print(f"{'certified' if new else 'already certified'}: {s.public_key.text} "
              f"({fingerprint(s.public_key)}) for node {s.node}, valid {s.not_before} to {s.not_after}")


@ledger_app.command("rotate-key")
def rotate_key(config: ConfigOpt) -> None:
    """Replace the ledger key (node stopped): certified, handed over by the old key, ledgered."""
    from .ledger.anchor import fingerprint
    from .ledger_keys import rotate
    old, new, _ = _run(config, rotate)
    console.print("restart the node so that it signs with the new key")
    out.print(f"ledger key rotated: {fingerprint(old)} -> {fingerprint(new)}\nnew key {new.text}")


@ledger_app.command("key")
def key(config: ConfigOpt) -> None:
    """Print the ledger key, its fingerprint and its certification (give auditors the key)."""
    from .ledger.anchor import current_certification, fingerprint

    def show(ctx):
        k = ctx.ledger.public_key
        c = current_certification(ctx.engine, k)
        out.print(f"{k.text}\n{fingerprint(k)}")
        out.print(f"certified until {c.statement.not_after}" if c else "not certified: run "
                  "`shuqiao ledger certify`")
    _run(config, show)
