"""A witness quorum checked against the federation CA alone, on real nodes.

The three-node federation of test_witnessing_federation_e2e (the fund centre reaches the
agencies, they do not reach it). The auditor gives `audit verify` only the federation
CA: each cosignature counts under the witness's ledger-key certification that the log
gathered with it (pushed: fetched from the witness; pulled: handed over in the
exchange). Then the log's operator, short of cosignatures, edits its export: a
witness's certification swapped for one of another node, or for an expired one.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from node.ledger import canonical
from node.ledger.anchor import KeyStatement, certify
from node.ledger.signing import LedgerPublicKey
from node.keys.pki import load_tls_identity
from node.keys.secrets import KeyEncryptionKey

from .test_witnessing_federation_e2e import export, federation, key_of, settled, verify, wait_for

pytestmark = pytest.mark.e2e


def read(path):
    header, *entries = (json.loads(line) for line in Path(path).read_bytes().splitlines())
    return header, entries


def write(path, header, entries) -> str:
    path.write_text("".join(json.dumps(x, separators=(",", ":")) + "\n" for x in [header, *entries]))
    return f"export:{path}"


def certification(fed, signer: str, *, node: str, key: str, days_left: int):
    """A statement that `key` is `node`'s, signed with `signer`'s TLS identity (from its disk)."""
    d = fed.nodes[signer].directory
    cert_pem, key_pem = load_tls_identity(d / "tls" / f"{signer}.pem", d / "tls" / f"{signer}.key",
                                          kek=KeyEncryptionKey.load(d / "keys" / "node.kek"))
    now = datetime.now(timezone.utc)
    statement = KeyStatement(node, LedgerPublicKey.from_text(key), canonical.rfc3339(now - timedelta(days=400)),
                             canonical.rfc3339(now + timedelta(days=days_left)), canonical.rfc3339(now))
    return certify(statement, cert_pem, key_pem.expose()).to_dict()


def test_witness_quorum_with_the_ca_alone_and_forged_witness_certifications(tmp_path):
    with federation(tmp_path) as fed:
        ca = str(fed.pki / "ca.pem")
        wait_for(fed, lambda: settled(fed, "fund", ("hrss", "edu")) and settled(fed, "hrss", ("fund",)),
                 "fund cosigned by both agencies, hrss by fund")
        fund_export = export(fed, "fund", tmp_path)
        r = verify(fed, fund_export, tmp_path, "--ca", ca, "--witness-quorum", "2")
        assert r.returncode == 0, r.stdout + r.stderr  # pushed: certifications fetched from the witnesses
        r = verify(fed, export(fed, "hrss", tmp_path), tmp_path, "--ca", ca, "--witness-quorum", "1")
        assert r.returncode == 0, r.stdout + r.stderr  # pulled: fund's certification came in the exchange
        r = verify(fed, fund_export, tmp_path, "--ca", ca, "--witness-quorum", "3")
        assert r.returncode == 1 and "2 valid cosignature(s) of this head from trusted witnesses, 3 required" \
            in r.stdout, r.stdout
        r = verify(fed, fund_export, tmp_path, "--ca", ca, "--witness-quorum", "1", "--witness", "edu")
        assert r.returncode == 0, r.stdout + r.stderr
        r = verify(fed, fund_export, tmp_path, "--ca", ca, "--witness-quorum", "2", "--witness", "edu")
        assert r.returncode == 2, r.stdout + r.stderr  # only one witness trusted: a quorum of 2 is impossible

        header, entries = read(fund_export[len("export:"):])
        held = header["witnessing"]["witness_certifications"]
        assert set(held) == {"hrss", "edu"}
        edu_key = key_of(fed, "edu")
        # edu's key, certified as hrss's with hrss's own TLS identity: for another node
        held["edu"] = [certification(fed, "hrss", node="hrss", key=edu_key, days_left=30)]
        r = verify(fed, write(tmp_path / "other-node.jsonl", header, entries), tmp_path,
                   "--ca", ca, "--witness-quorum", "2")
        assert r.returncode == 1, r.stdout
        assert "1 valid cosignature(s)" in r.stdout
        assert "the cosignature by edu does not count" in r.stdout and "not 'edu'" in r.stdout
        # edu's own statement, but it ended yesterday: the cosignature was made after
        held["edu"] = [certification(fed, "edu", node="edu", key=edu_key, days_left=-1)]
        r = verify(fed, write(tmp_path / "expired.jsonl", header, entries), tmp_path,
                   "--ca", ca, "--witness-quorum", "2")
        assert r.returncode == 1 and "the cosignature by edu does not count" in r.stdout, r.stdout
        assert "the certification expired at" in r.stdout
        # an out-of-band key still counts where the certification does not
        r = verify(fed, write(tmp_path / "expired-2.jsonl", header, entries), tmp_path, "--ca", ca,
                   "--witness-quorum", "2", f"--witness-key=edu={edu_key}")
        assert r.returncode == 0, r.stdout + r.stderr
