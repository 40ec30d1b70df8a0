"""`shuqiao`: the node's command line (typer). Long work shows progress bars."""
from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from node.core.config import ConfigError, load_config

from node.cli.choices import LedgerCheck, LogFormat
from node.cli.common import (Bars, ConfigOpt, app, ca_app, console, dataset_app, error_line,  # noqa: F401
                             fail, node_context, out, query_app, rule_app, warn)


def _print_version(value: bool) -> None:
    if value:
        from node.core.version import software_version
        out.print(f"shuqiao {software_version()}", highlight=False)
        raise typer.Exit(0)


@app.callback()
def _main(verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
          debug: Annotated[bool, typer.Option(
              "--debug", help="Print an unexpected failure's details to stderr.")] = False,
          version: Annotated[bool, typer.Option(
              "--version", callback=_print_version, is_eager=True,
              help="Print the installed version and exit.")] = False) -> None:
    from node.storage.schema import restrict_umask
    restrict_umask()  # databases, logs, keys and results: owner-only, whatever the shell's umask
    from node.cli.failures import state
    state["debug"] = debug
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@app.command()
def init(config: ConfigOpt) -> None:
    """Create this node's key-encryption key and database (run once per node)."""
    from node.keys.secrets import KeyEncryptionKey
    with node_context(config) as ctx:
        path = ctx.config.kek_path
        if path.exists():
            out.print(f"node key already exists: {path} (left unchanged)", highlight=False)
        else:
            KeyEncryptionKey.create(path)
            out.print(f"created node key-encryption key {path} (mode 0600); back it up "
                      "securely: sealed keys cannot be opened without it", highlight=False)
        ctx.engine  # creates the schema
        out.print(f"database ready: {ctx.config.storage_url.split('@')[-1]}", highlight=False)
        from node.datasets.stored_rows import seal_stored_rows
        if sealed := seal_stored_rows(ctx):
            out.print(f"sealed {sealed} chunk(s) of dataset rows stored before rows were sealed")
        from node.runtime import admin_log
        ledger = ctx.ledger  # creates the Ed25519 ledger key, sealed under the KEK
        if ledger.size() == 0:
            with ctx.engine.begin() as conn:
                admin_log.record(ctx, conn, "node_initialised", "node")
        out.print(f"ledger key {ledger.public_key.text}", highlight=False)


@app.command()
def serve(config: ConfigOpt,
          port_file: Annotated[Optional[Path], typer.Option(help="Write the bound port here.")] = None,
          check_ledger: Annotated[LedgerCheck, typer.Option(
              help="Ledger check before serving: tail (latest head and recent entries) or full.")
          ] = LedgerCheck.TAIL,
          accept_damaged_ledger: Annotated[bool, typer.Option(
              help="Serve even if the ledger check fails (recorded in the ledger).")] = False,
          log_format: Annotated[Optional[LogFormat], typer.Option(
              help="text or json (one JSON object a line); default: the config's "
                   "[logging] format, else text.")] = None,
          ) -> None:
    """Run the node: answer partners over gRPC with mutual TLS until SIGTERM."""
    from node.core.logs import configure
    from node.runtime.data_lock import DataDirLocked
    from node.server.serve import LedgerDamaged, serve as run
    with node_context(config) as ctx:
        configure(log_format.value if log_format else ctx.config.logging.format, logging.INFO)
        try:
            run(ctx, port_file, check=check_ledger.value, accept_damaged_ledger=accept_damaged_ledger)
        except (OSError, LedgerDamaged, DataDirLocked) as exc:
            fail(str(exc))


CA_PASSPHRASE_ENV = "SHUQIAO_CA_PASSPHRASE"
PassphraseFileOpt = Annotated[Optional[Path], typer.Option(
    "--passphrase-file", help=f"File (mode 0600) whose first line is the CA key's passphrase; "
                              f"else ${CA_PASSPHRASE_ENV}, else asked at the terminal.")]


def _ca_passphrase(path: Optional[Path], *, confirm: bool) -> bytes | None:
    """The CA key's passphrase from a file, the environment or the terminal; None if none."""
    import os

    from node.keys.secrets import read_private_file
    if path is not None:
        try:
            text = read_private_file(path).decode("utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            fail(f"cannot use passphrase file {path}: "
                 f"{exc if isinstance(exc, PermissionError) else 'unreadable or not text'}", 2)
        if not text or not text[0]:
            fail(f"passphrase file {path} is empty", 2)
        return text[0].encode()
    if os.environ.get(CA_PASSPHRASE_ENV):
        return os.environ[CA_PASSPHRASE_ENV].encode()
    if sys.stdin.isatty():
        return typer.prompt("CA key passphrase", hide_input=True,
                            confirmation_prompt=confirm).encode() or None
    return None


@ca_app.command("init")
def ca_init(directory: Annotated[Path, typer.Option("--dir", help="Where to write ca.pem and ca.key.")],
            name: str = "Shuqiao pilot federation CA",
            passphrase_file: PassphraseFileOpt = None,
            unencrypted_key: Annotated[bool, typer.Option(
                "--unencrypted-key", help="Store the CA key without a passphrase (a throwaway "
                                          "demo CA only).")] = False) -> None:
    """Create a federation CA for a pilot (production uses the government PKI).

    Its private key is encrypted PKCS#8 under a passphrase; `ca issue` then asks for it.
    """
    from node.keys.pki import init_ca
    passphrase = None if unencrypted_key else _ca_passphrase(passphrase_file, confirm=True)
    if passphrase is None and not unencrypted_key:
        fail(f"the CA key needs a passphrase: give --passphrase-file FILE or set "
             f"{CA_PASSPHRASE_ENV} (or, for a throwaway demo CA only, --unencrypted-key)", 2)
    if passphrase is not None and len(passphrase) < 12:
        fail("the CA key passphrase must be at least 12 characters long", 2)
    try:
        files = init_ca(directory, name=name, passphrase=passphrase)
    except (FileExistsError, ValueError) as exc:
        fail(str(exc))
    out.print(f"CA certificate {files.cert_path}\nCA key         {files.key_path} (keep offline)",
              highlight=False)
    if passphrase is None:
        warn("the CA key is stored UNENCRYPTED: anyone who copies it can mint node "
             "identities; use it for a throwaway demo only")


@ca_app.command("issue")
def ca_issue(ca_dir: Annotated[Path, typer.Option("--ca", help="Directory holding ca.pem and ca.key.")],
             node_id: Annotated[str, typer.Option("--node", help="Node id, e.g. hrss.")],
             out_dir: Annotated[Path, typer.Option("--out", help="Where to write the node's files.")],
             host: Annotated[list[str], typer.Option(help="Extra DNS name or IP (repeatable).")] = [],
             seal_with: Annotated[Optional[Path], typer.Option(
                 "--seal-with", help="Node config whose KEK seals the private key.")] = None,
             passphrase_file: PassphraseFileOpt = None) -> None:
    """Issue a node certificate (SAN urn:shuqiao:node:<id>) signed by the pilot CA."""
    from node.keys.pki import CA_KEY_NAME, TlsIdentityError, issue_node_cert
    from node.keys.secrets import KeyEncryptionKey, KekError
    kek = None
    try:
        if seal_with:
            kek = KeyEncryptionKey.load(load_config(seal_with).kek_path)
        passphrase = None
        if b"ENCRYPTED PRIVATE KEY" in (ca_dir / CA_KEY_NAME).read_bytes()[:64]:
            passphrase = _ca_passphrase(passphrase_file, confirm=False)
            if passphrase is None:
                fail(f"the CA key {ca_dir / CA_KEY_NAME} is encrypted: give --passphrase-file "
                     f"FILE or set {CA_PASSPHRASE_ENV}; nothing was issued", 2)
        files = issue_node_cert(ca_dir, node_id, out_dir, hosts=tuple(host) or ("localhost", "127.0.0.1"),
                                kek=kek, ca_passphrase=passphrase)
    except (FileExistsError, FileNotFoundError, ValueError, TlsIdentityError, KekError,
            ConfigError) as exc:
        fail(f"{exc}; nothing was issued")
    out.print(f"certificate {files.cert_path}\nprivate key {files.key_path}"
              + (" (sealed under the node KEK)" if kek else ""), highlight=False)


@app.command()
def demo(workdir: Annotated[Optional[Path], typer.Option(
             help="Keep the run's files here (default: demo-run, or demo-run-2, ... if taken).")] = None,
         hrss_rows: int = 200_000, graduates: int = 60_000, applicants: int = 20_000,
         seed: int = 20260101) -> None:
    """Three real nodes on localhost; the seed's two identification jobs, checked."""
    from node.devtools.demo import run_demo
    ok = run_demo(workdir=workdir, hrss_rows=hrss_rows, graduates=graduates,
                  applicants=applicants, seed=seed, console=console, out=out)
    raise typer.Exit(0 if ok else 1)


def register_commands() -> None:
    """Import every command group's module: importing one registers its commands on `app`."""
    from node.cli import (audit, consent, dataset, ledger, ops, query, statistics,  # noqa: F401
                          witness)


def main() -> None:
    register_commands()
    try:
        app()
    except KeyboardInterrupt:
        console.print("interrupted")
        sys.exit(130)
    except Exception as exc:  # a user never sees a traceback: one line, details in the log
        from node.cli.failures import report
        words = [a for a in sys.argv[1:] if a[:1] != "-" and a.replace("-", "").isalpha()]
        command = " ".join(words[:2])
        line, code = report(exc, command or "shuqiao")
        error_line(line)
        sys.exit(code)
