"""`shuqiao audit consent`: recompute a query's consent digest from the applicant file."""
from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from adapters import IdType, SourceError

from node.cli.common import fail, out
from node.cli.audit import CaOpt, CertOpt, Identity, KeyOpt, TokenOpt, audit_app, open_source


@audit_app.command("consent")
def consent(input_path: Annotated[Path, typer.Option("--input", help="The applicant file (CSV or .xlsx).")],
            id_column: Annotated[str, typer.Option(help="Identifier column.")],
            auth_column: Annotated[str, typer.Option(help="Authorisation reference column.")],
            id_type: Annotated[IdType, typer.Option()] = IdType.CN_RESIDENT_ID,
            encoding: str = "auto",
            expect: Annotated[Optional[str], typer.Option(help="Digest to compare with (hex).")] = None,
            ledger: Annotated[list[str], typer.Option(
                help="Ledger source(s) whose entries for --query-id must hold this digest.")] = [],
            query_id: Annotated[Optional[str], typer.Option(help="The query to check in --ledger.")] = None,
            cert: CertOpt = None, key: KeyOpt = None, ca: CaOpt = None, token_file: TokenOpt = None) -> None:
    """Print the consent digest (node/policy/consent.py) of the rows a query would ask; exit 1 on a mismatch."""
    from node.cli.common import open_input
    from node.policy.consent import applicant_pairs, consent_digest
    if ledger and not query_id:
        fail("--ledger needs --query-id", 2)
    try:
        with open_input(input_path, encoding) as source:
            pairs = applicant_pairs(source, id_column, auth_column, id_type)
    except SourceError as exc:
        fail(str(exc), 2)
    digest = consent_digest(pairs)
    out.print(f"consent digest {digest} over {len(pairs)} rows", highlight=False)
    ok = expect is None or expect.strip().lower() == digest
    if not ok:
        out.print(f"MISMATCH: expected {expect}", highlight=False)
    for spec in ledger:
        recorded = _recorded(open_source(spec, Identity(cert, key, ca), token_file), query_id)
        match = bool(recorded) and all(d == digest for d in recorded)
        ok &= match
        out.print(f"{spec}: {'matches' if match else 'MISMATCH'} "
                  f"({', '.join(sorted(set(recorded))) or 'no entry with a digest for this query'})",
                  highlight=False)
    raise typer.Exit(0 if ok else 1)


def _recorded(source, query_id: str) -> list[str]:
    from node.ledger.entries import QueryEntry, decode
    head = source.tree_head()
    return [e.authorisation_digest or "" for _, e in ((i, decode(d)) for i, d in source.entries(0, head.size))
            if isinstance(e, QueryEntry) and e.query_id == query_id and e.phase == "completed"]
