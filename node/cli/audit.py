"""`shuqiao audit ...` and `shuqiao token new`: auditors verify ledgers, operators export them.

A ledger source is one of:
  export:PATH                        an export file (offline)
  https://HOST:PORT[?token-file=F]   a node's HTTP API with an auditor token
  grpc://NODE@HOST:PORT              a node's gRPC API, as the auditor certificate given
                                     by --cert/--key/--ca (a configured [[auditors]] id)
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Optional
from urllib.parse import parse_qs, urlsplit

import typer

from node.cli.choices import TokenRole
from node.cli.common import ConfigOpt, app, command_group, console, fail, node_context, out

audit_app = command_group("Verify ledgers (auditor) and export them (operator).")
app.add_typer(audit_app, name="audit")

StateOpt = Annotated[Path, typer.Option(help="Where the auditor keeps the heads and keys it has seen.")]
DEFAULT_STATE = Path(os.environ.get("SHUQIAO_AUDIT_STATE", Path.home() / ".shuqiao-audit"))


class Identity:
    def __init__(self, cert: Optional[Path], key: Optional[Path], ca: Optional[Path]) -> None:
        self.cert, self.key, self.ca = cert, key, ca


def open_source(spec: str, ident: Identity, token_file: Optional[Path]):
    from node.ledger.sources import ExportSource, SourceError
    if spec.startswith("export:"):
        try:
            return ExportSource(spec[len("export:"):])
        except SourceError as exc:
            fail(str(exc), 2)
    parts = urlsplit(spec)
    if parts.scheme in ("https", "http"):
        import httpx
        from node.ledger.http import HttpLogSource
        tf = parse_qs(parts.query).get("token-file", [None])[0] or token_file
        if tf is None:
            fail(f"{spec}: give the auditor token with ?token-file=FILE or --token-file", 2)
        token = Path(tf).read_text().strip()
        base = f"{parts.scheme}://{parts.netloc}"
        import ssl
        verify = ssl.create_default_context(cafile=str(ident.ca)) if ident.ca else True
        return HttpLogSource(base, token, client=httpx.Client(base_url=base, timeout=60, verify=verify))
    if parts.scheme == "grpc":
        import grpc
        from node.ledger.grpc_service import GrpcLogSource
        from node.keys.pki import target_name
        if not (ident.cert and ident.key and ident.ca and parts.username):
            fail("grpc:// sources need NODE@HOST:PORT and --cert, --key and --ca", 2)
        creds = grpc.ssl_channel_credentials(root_certificates=ident.ca.read_bytes(),
                                             private_key=ident.key.read_bytes(),
                                             certificate_chain=ident.cert.read_bytes())
        channel = grpc.secure_channel(parts.hostname + f":{parts.port}", creds, options=[
            ("grpc.ssl_target_name_override", target_name(parts.username))])
        return GrpcLogSource(channel, parts.username)
    fail(f"unknown ledger source {spec!r}: use export:PATH, https://HOST:PORT or grpc://NODE@HOST:PORT", 2)


CertOpt = Annotated[Optional[Path], typer.Option(help="Auditor certificate (gRPC sources).")]
KeyOpt = Annotated[Optional[Path], typer.Option(help="Auditor private key (gRPC sources).")]
CaOpt = Annotated[Optional[Path], typer.Option(help="Federation CA: TLS trust for gRPC and HTTPS, and "
                                                "the anchor every ledger key must be certified by.")]
ExpectKeyOpt = Annotated[Optional[str], typer.Option(
    "--expect-key", help="The ledger key (ed25519:<hex>, or its sha256:<hex> fingerprint from "
    "`shuqiao ledger key`) obtained out of band; any other fails.")]


def trust_of(ca: Optional[Path], expect_key: Optional[str] = None, node: Optional[str] = None):
    """The auditor's anchors for ledger keys: the CA (--ca) and an expected key."""
    from node.ledger.anchor import CertificationError, load_roots
    from node.ledger.audit import Trust
    from node.ledger.signing import LedgerPublicKey, SignatureError
    try:
        roots = tuple(load_roots(ca)) if ca else ()
        expected = None
        if expect_key and re.fullmatch(r"sha256:[0-9a-f]{64}", expect_key):
            expected = expect_key
        elif expect_key:
            expected = LedgerPublicKey.from_text(expect_key)
    except (CertificationError, SignatureError) as exc:
        fail(str(exc), 2)
    return Trust(roots, expected, node)


TokenOpt = Annotated[Optional[Path], typer.Option(help="File holding the auditor token (HTTP sources).")]


@audit_app.command("verify")
def verify(source: Annotated[str, typer.Argument(help="export:PATH | https://... | grpc://NODE@HOST:PORT")],
           state_dir: StateOpt = DEFAULT_STATE, cert: CertOpt = None, key: KeyOpt = None,
           ca: CaOpt = None, token_file: TokenOpt = None, expect_key: ExpectKeyOpt = None,
           node: Annotated[Optional[str], typer.Option(
               help="The node whose log this must be (default: grpc://NODE@..., else any).")] = None,
           start: Optional[int] = None, end: Optional[int] = None,
           witness_quorum: Annotated[int, typer.Option(
               help="Accept the head only with cosignatures from this many distinct witnesses: "
               "by a --witness-key, or (with --ca) by a key certified for the witness's node "
               "by that CA at the cosignature's time; never the log's own node.")] = 0,
           witness_key: Annotated[list[str], typer.Option(
               help="A trusted witness with a key obtained out of band: NODE=ed25519:<hex> "
               "(repeatable).")] = [],
           witness: Annotated[list[str], typer.Option(
               "--witness", help="Trust only these witnesses' certified keys (repeatable; "
               "default with --ca: every certified federation member).")] = []) -> None:
    """The key's certification (--ca) or --expect-key, consistency with every head seen
    before (an older export must be a prefix of the newest), inclusion, signatures, the
    witness evidence the node holds, and (with --witness-quorum) its cosignatures, each
    checked against a --witness-key or the witness's key certification (--ca)."""
    from node.cli.witness import apply_witness_checks, trusted_witnesses
    from node.ledger.audit import KnownHeads, verify as run
    trusted = trusted_witnesses(witness_key)
    if witness_quorum > 0 and ca is None and witness_quorum > len(trusted):
        fail(f"--witness-quorum {witness_quorum} needs --ca (certified witnesses) or at least "
             "as many --witness-key", 2)
    if witness and witness_quorum > len(set(witness) | set(trusted)):
        fail(f"--witness-quorum {witness_quorum} needs at least as many --witness/--witness-key", 2)
    if node is None and source.startswith("grpc://"):
        node = urlsplit(source).username
    trust = trust_of(ca, expect_key, node)
    src = open_source(source, Identity(cert, key, ca), token_file)
    verdict = run(src, KnownHeads(state_dir), start=start, end=end, trust=trust)
    apply_witness_checks(verdict, src, trusted, witness_quorum, trust.roots, set(witness) or None)
    out.print(str(verdict), highlight=False, soft_wrap=True)
    raise typer.Exit(0 if verdict.ok else 1)


@audit_app.command("cross-check")
def cross_check(asker: Annotated[str, typer.Option(help="The asking node's ledger source.")],
                answerer: Annotated[str, typer.Option(help="The answering node's ledger source.")],
                cert: CertOpt = None, key: KeyOpt = None, ca: CaOpt = None,
                token_file: TokenOpt = None) -> None:
    """Query by query: each recorded query is matched by the other side's entry and receipt."""
    from node.ledger.crosscheck import cross_check as run
    ident = Identity(cert, key, ca)
    sources = open_source(asker, ident, token_file), open_source(answerer, ident, token_file)
    problems = [p for s in sources for p in anchor_problems(s, trust_of(ca))] if ca else []
    report = run(*sources)
    out.print(str(report), highlight=False, soft_wrap=True)
    for problem in problems:
        out.print(f"  key: {problem}", highlight=False)
    raise typer.Exit(0 if report.ok and not problems else 1)


def anchor_problems(source, trust) -> list[str]:
    """Why `source`'s ledger key is not certified by the CA in `trust` (none: it is)."""
    from node.ledger.anchor import CertificationError, verify_certification
    from node.ledger.sources import SourceError
    try:
        key, head = source.public_key(), source.tree_head()
        get = getattr(source, "key_certification", None)
        verify_certification(get() if get else None, trust.roots, node=head.node, key=key,
                             at=head.time)
    except (CertificationError, SourceError, ValueError) as exc:
        return [f"{source.name}: the ledger key is not certified for its node: {exc}"]
    return []


@audit_app.command("export")
def export(config: ConfigOpt, out_path: Annotated[Path, typer.Option("--out", help="Export file.")]) -> None:
    """Write this node's ledger under a fresh signed head, for an offline verifier."""
    from node.ledger.sources import write_export
    with node_context(config) as ctx, open(out_path, "wb") as f:
        head = write_export(ctx.ledger, f)
    out.print(f"exported {head.size} entries of {ctx.config.node.id} under root {head.root.hex()[:16]}… "
              f"→ {out_path}")


@audit_app.command("check")
def check(config: ConfigOpt) -> None:
    """Recompute this node's whole ledger from its database and name anything altered."""
    from node.server.witnessing import status_lines
    with node_context(config) as ctx:
        report = ctx.ledger.verify_all()
        alarms = [line for line in status_lines(ctx) if line.startswith("LEDGER ALARM")]
    out.print(str(report), highlight=False, soft_wrap=True)
    for line in alarms:
        out.print(line, highlight=False)
    raise typer.Exit(0 if report.ok and not alarms else 1)


token_app = command_group("Bearer tokens for the HTTP API.")
app.add_typer(token_app, name="token")


@token_app.command("new")
def token_new(role: Annotated[TokenRole, typer.Option(
        help="operator (checks, jobs), auditor (ledger, /metrics), admin (/v1/admin, datasets, "
             "policy) or metrics (/metrics only)")] = TokenRole.AUDITOR,
        name: Annotated[Optional[str], typer.Option(
            help="The holder's name (logs, ledger and console show it): a [[http.tokens]] entry.")] = None,
        purpose: Annotated[Optional[list[str]], typer.Option(
            help="A purpose the holder may state (repeat; none: any).")] = None,
        rule: Annotated[Optional[list[str]], typer.Option(
            help="A rule the holder may run (repeat; none: any).")] = None) -> None:
    """A fresh token: hand the token to its holder, put only the digest in the config."""
    import tomli_w
    from pydantic import ValidationError

    from node.core.service_config import TokenEntry
    from node.ledger.http import new_token
    token, digest = new_token()
    if name is None:
        if purpose or rule or role is TokenRole.OPERATOR:
            fail("give the holder a --name: operator tokens and scoped tokens are [[http.tokens]] entries", 2)
        console.print(f"add to [http] {role.value}_tokens: \"{digest}\"", soft_wrap=True)
    else:
        try:
            entry = TokenEntry(name=name, digest=digest, role=role.value, purposes=purpose or [], rules=rule or [])
        except ValidationError as exc:
            fail("--name and --purpose take lowercase letters, digits, '.', '_' and '-' "
                 f"(2-63 characters): {', '.join(sorted({str(e['loc'][0]) for e in exc.errors()}))}", 2)
        body = entry.model_dump(mode="json", exclude_defaults=True)
        body["role"] = role.value
        console.print("add to the config:\n\n[[http.tokens]]\n" + tomli_w.dumps(body), highlight=False,
                      soft_wrap=True)
    out.print(token)
