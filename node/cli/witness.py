"""`shuqiao witness ...`: a node's witnessing state, conflict resolution, federation coverage.

Also the witness side of `shuqiao audit verify` (evidence and --witness-quorum).
"""
from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from node.cli.common import ConfigOpt, app, command_group, fail, node_context, out

witness_app = command_group("Witnessing partners' ledgers: status, "
                          "resolving conflicts, checking a federation's configs.")
app.add_typer(witness_app, name="witness")


def trusted_witnesses(specs: list[str]) -> dict:
    """NODE=ed25519:<hex> options -> {node: LedgerPublicKey}."""
    from node.ledger.signing import LedgerPublicKey, SignatureError
    trusted = {}
    for spec in specs:
        node, _, key = spec.partition("=")
        try:
            trusted[node.strip()] = LedgerPublicKey.from_text(key.strip())
        except (SignatureError, ValueError):
            fail(f"--witness-key {spec!r}: expected NODE=ed25519:<64 hex digits>", 2)
    return trusted


def apply_witness_checks(verdict, source, trusted: dict, quorum: int, roots=(),
                         witnesses: set[str] | None = None) -> None:
    """Add the witness findings (open conflicts, broken evidence, missing quorum) to `verdict`;
    with `roots` (--ca), certified witnesses (restricted to `witnesses`) count too."""
    from node.ledger.witness_evidence import witness_findings
    if verdict.head is None:
        return
    for f in witness_findings(source, verdict.head, trusted, quorum, roots, witnesses):
        verdict.fail(f.kind, f.where, f.detail)


@witness_app.command("status")
def status(config: ConfigOpt) -> None:
    """Open conflicts (alarms) and the partners' heads this node accepted last; exit 1 on alarms."""
    from node.ledger.witness import Witness
    from node.server.witnessing import status_lines
    with node_context(config) as ctx:
        lines = status_lines(ctx)
        witness = Witness(ctx.ledger)
        for c in witness.all_conflicts():
            out.print(f"  conflict {c.id}: {c.kind} of {c.partner}, {'OPEN' if c.open else 'resolved'}; "
                      f"heads size {c.first.size} root {c.first.root.hex()} / size {c.second.size} "
                      f"root {c.second.root.hex()}", highlight=False)
        with ctx.engine.connect() as conn:
            for p in ctx.config.partners:
                last = witness.last_seen(conn, p.id)
                if last is not None:
                    out.print(f"  {p.id}: accepted size {last.size} root {last.root.hex()}", highlight=False)
        mine = witness.cosignatures_of(ctx.ledger.sign_head())
        out.print(f"  own head cosigned by: {', '.join(sorted(c.witness for c in mine)) or 'nobody yet'}",
                  highlight=False)
    for line in lines:
        out.print(line, highlight=False)
    raise typer.Exit(1 if any(line.startswith("LEDGER ALARM") for line in lines) else 0)


@witness_app.command("resolve")
def resolve(config: ConfigOpt,
            partner: Annotated[str, typer.Option(help="The log whose conflicts are resolved "
                                                 "(this node's own id for its own log).")],
            root: Annotated[str, typer.Option(help="Root (hex) of the partner's true head, one "
                                              "this node holds: accepted or kept as evidence.")]) -> None:
    """Close a partner's conflicts once the true history is established; witnessing resumes on it.

    The resolution is ledgered (a "resolved" witness entry naming the head); the evidence
    of the conflicts stays in the witness record, marked resolved.
    """
    from node.runtime.admin_log import actor
    from node.ledger.witness import Witness, WitnessError
    try:
        root_bytes = bytes.fromhex(root)
        if len(root_bytes) != 32:
            raise ValueError
    except ValueError:
        fail("--root must be 64 hex digits", 2)
    with node_context(config) as ctx:
        try:
            head = Witness(ctx.ledger).resolve(partner, root_bytes, actor())
        except WitnessError as exc:
            fail(str(exc))
    out.print(f"resolved: witnessing of {partner} resumes from size {head.size} root {head.root.hex()}",
              highlight=False)


@witness_app.command("check-config")
def check_config(configs: Annotated[list[Path], typer.Argument(help="Node configs of the federation.")]) -> None:
    """Warn about logs that no partner would witness; exit 1 if any."""
    from node.core.config import ConfigError
    from node.server.witnessing import coverage_warnings, load_configs
    try:
        warnings = coverage_warnings(load_configs(configs))
    except ConfigError as exc:
        fail(str(exc), 2)
    for w in warnings:
        out.print(f"warning: {w}", highlight=False)
    if not warnings:
        out.print("every ledger has at least one witness", highlight=False)
    raise typer.Exit(1 if warnings else 0)
