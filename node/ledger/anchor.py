"""Ledger keys anchored in the federation PKI: key certifications, issued and checked.

An auditor handed a ledger (an export, or a node's API) must know the Ed25519 key that
signs its heads really is that node's ledger key, on first contact and without having
seen the node before. The node's key is therefore *certified for its node id* in the
federation PKI, the one that already names every node for mutual TLS:

    KeyStatement {"v":1,"type":"ledger-key","node","public_key","not_before","not_after",
                  "issued"[,"previous_key"]}   (canonical JSON)
    signed by the node's CA-issued TLS identity (the certificate whose subjectAltName is
    urn:shuqiao:node:<id>), behind the context "shuqiao/ledger/key-certification/v1\\n";
    the certification carries the signing certificate (and any intermediates) with it.

Why a statement signed with the TLS identity rather than an Ed25519 certificate from
the CA: the CA's key stays offline (and in production belongs to the government PKI,
which issues TLS certificates, not certificates for arbitrary Ed25519 keys), while the
node holds its TLS key anyway; so the node certifies its ledger key, and every later
rotation, by itself, at `serve` start or with `shuqiao ledger certify`, and nothing new
has to be requested from the CA. Checking it needs nothing but the CA certificate:

1. the signing certificate chains to the CA given to the verifier (`--ca`), checked by
   pyca/cryptography's RFC 5280 path validation as a client certificate, at the
   statement's `issued` time (a signature made while the certificate was valid stays
   valid, as with time-stamped signatures);
2. that certificate names the node (SAN urn:shuqiao:node:<id>) and the statement names
   the same node, which is the node of the log being verified;
3. the statement's signature verifies with the certificate's key;
4. the head's time lies within [not_before, not_after]; not_after never outlives the
   signing certificate;
5. the statement's key is the key that signed the heads.

A rotation (`shuqiao ledger rotate-key`) is certified the same way, the statement naming
the previous key, and ledgered as an admin entry `ledger_key_rotated` holding the old
and new keys, the digest of the new key's certification and a *handover*: the old key's
signature over the new one. An auditor who pinned the old key follows the rotation only
through such an entry, inside the log it verified; a partner that pinned it (receipts,
witnessing) moves its pin with `follow_partner_rotation` (`shuqiao ledger
follow-rotation`) only when the new key's certification names the pinned key as the
previous one.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from sqlalchemy import Connection, Engine, insert, select

from node.core.clock import SYSTEM_CLOCK
from node.core.errors import EvidenceError
from node.keys.pki import node_id_from_cert
from node.ledger import canonical
from node.ledger.signing import (KeyRing,
    LedgerPublicKey,
    LedgerSigningKey,
    SignatureError,
    SignedTreeHead,
    check_node_id,
    partner_key)
from node.ledger.tables import ledger_key_certifications, ledger_partner_key_rotations

__all__ = ["CertificationError", "KeyStatement", "KeyCertification", "certify",
           "verify_certification", "load_roots", "store_certification", "current_certification",
           "handover", "verify_handover", "fingerprint", "current_head", "follow_partner_rotation", "ROTATED", "CERTIFIED"]

CONTEXT = b"shuqiao/ledger/key-certification/v1\n"
HANDOVER_CONTEXT = b"shuqiao/ledger/key-handover/v1\n"
ROTATED = "ledger_key_rotated"
CERTIFIED = "ledger_key_certified"


class CertificationError(EvidenceError, ValueError):
    """A key certification that is missing, malformed or does not hold; says which check."""


def fingerprint(key: LedgerPublicKey) -> str:
    """"sha256:<hex>" of the raw public key: short enough to read out over the phone."""
    return "sha256:" + hashlib.sha256(key.raw).hexdigest()


@dataclass(frozen=True)
class KeyStatement:
    """"`public_key` is the ledger key of `node` from `not_before` to `not_after`"."""

    node: str
    public_key: LedgerPublicKey
    not_before: str
    not_after: str
    issued: str
    previous_key: LedgerPublicKey | None = None

    def __post_init__(self) -> None:
        check_node_id(self.node, "statement node")
        for name in ("not_before", "not_after", "issued"):
            canonical.check_time(getattr(self, name), f"statement {name}")
        if self.not_before > self.not_after:  # fixed-width UTC text sorts as time
            raise canonical.CanonicalError("statement not_before is after its not_after")

    def to_dict(self) -> dict[str, Any]:
        d = {"v": 1, "type": "ledger-key", "node": self.node, "public_key": self.public_key.text,
             "not_before": self.not_before, "not_after": self.not_after, "issued": self.issued}
        if self.previous_key is not None:
            d["previous_key"] = self.previous_key.text
        return d

    def payload(self) -> bytes:
        return canonical.dump(self.to_dict())

    @classmethod
    def from_dict(cls, d: Any) -> KeyStatement:
        required = {"v", "type", "node", "public_key", "not_before", "not_after", "issued"}
        if not isinstance(d, dict) or not required <= set(d) <= required | {"previous_key"}:
            raise canonical.CanonicalError("a key statement has v, type, node, public_key, "
                                           "not_before, not_after, issued[, previous_key]")
        if d["v"] != 1 or d["type"] != "ledger-key":
            raise canonical.CanonicalError("unsupported key statement")
        previous = d.get("previous_key")
        return cls(d["node"], LedgerPublicKey.from_text(d["public_key"]), d["not_before"],
                   d["not_after"], d["issued"],
                   None if previous is None else LedgerPublicKey.from_text(previous))


@dataclass(frozen=True)
class KeyCertification:
    """A statement, its signature, and the signing certificate (then intermediates), DER."""

    statement: KeyStatement
    signature: bytes
    chain: tuple[bytes, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "statement": self.statement.to_dict(), "signature": self.signature.hex(),
                "chain": [base64.b64encode(c).decode() for c in self.chain]}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":"))

    def digest(self) -> str:
        """"sha256:<hex>" over the JSON form: what a ledger entry names it by."""
        return "sha256:" + hashlib.sha256(self.to_json().encode()).hexdigest()

    @classmethod
    def from_dict(cls, d: Any) -> KeyCertification:
        try:
            if not isinstance(d, dict) or set(d) != {"v", "statement", "signature", "chain"} \
                    or d["v"] != 1 or not isinstance(d["chain"], list) or not d["chain"]:
                raise CertificationError("a key certification has v, statement, signature "
                                         "and a non-empty chain")
            return cls(KeyStatement.from_dict(d["statement"]), bytes.fromhex(d["signature"]),
                       tuple(base64.b64decode(c, validate=True) for c in d["chain"]))
        except (canonical.CanonicalError, SignatureError, ValueError, TypeError,
                binascii.Error) as exc:
            if isinstance(exc, CertificationError):
                raise
            raise CertificationError(f"malformed key certification ({exc})") from None

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyCertification:
        try:
            return cls.from_dict(json.loads(text))
        except ValueError as exc:
            if isinstance(exc, CertificationError):
                raise
            raise CertificationError("malformed key certification (not JSON)") from None


def _sign(private_key: Any, data: bytes) -> bytes:
    if isinstance(private_key, ec.EllipticCurvePrivateKey):
        return private_key.sign(data, ec.ECDSA(hashes.SHA256()))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        return private_key.sign(data)
    raise CertificationError("the TLS identity's key must be ECDSA or Ed25519 to certify")


def _check_signature(public_key: Any, signature: bytes, data: bytes) -> None:
    try:
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, ed25519.Ed25519PublicKey):
            public_key.verify(signature, data)
        else:
            raise CertificationError("the signing certificate's key is neither ECDSA nor Ed25519")
    except InvalidSignature:
        raise CertificationError("the statement's signature does not verify with the "
                                 "certificate it carries") from None


def certify(statement: KeyStatement, tls_cert_pem: bytes, tls_key_pem: bytes) -> KeyCertification:
    """Sign `statement` with a node's TLS identity (PEM; the cert file may hold a chain).

    Raises:
        CertificationError: the certificate does not name `statement.node`, or its key
            cannot sign.
    """
    certs = x509.load_pem_x509_certificates(tls_cert_pem)
    if node_id_from_cert(certs[0]) != statement.node:
        raise CertificationError(f"the TLS certificate does not name node {statement.node!r}")
    private_key = serialization.load_pem_private_key(tls_key_pem, password=None)
    chain = tuple(c.public_bytes(serialization.Encoding.DER) for c in certs
                  if c is certs[0] or c.issuer != c.subject)  # roots stay with the verifier
    return KeyCertification(statement, _sign(private_key, CONTEXT + statement.payload()), chain)


def load_roots(path: str | Path) -> list[x509.Certificate]:
    """The CA certificate(s) a verifier trusts, from a PEM file (`--ca`)."""
    try:
        return x509.load_pem_x509_certificates(Path(path).read_bytes())
    except (OSError, ValueError) as exc:
        raise CertificationError(f"cannot read the CA certificate {path}: {exc}") from None


def verify_certification(certification: KeyCertification | None, roots: Sequence[x509.Certificate],
                         *, node: str, key: LedgerPublicKey, at: str) -> KeyStatement:
    """Check every point of the module docstring; return the statement.

    Args:
        node: the node whose log is being verified.
        key: the key that signed the heads.
        at: the head's time (RFC 3339).

    Raises:
        CertificationError: naming the check that failed.
    """
    if certification is None:
        raise CertificationError("the source carries no certification of its ledger key "
                                 "(`shuqiao ledger certify` makes one)")
    statement = certification.statement
    try:
        leaf, *intermediates = (x509.load_der_x509_certificate(c) for c in certification.chain)
    except ValueError:
        raise CertificationError("the certification's certificate chain does not parse") from None
    issued = canonical.parse_time(statement.issued)
    try:
        verifier = PolicyBuilder().store(Store(list(roots))).time(issued).build_client_verifier()
        verifier.verify(leaf, intermediates)
    except VerificationError as exc:
        raise CertificationError("its signing certificate does not chain to the given CA "
                                 f"(at {statement.issued}: {exc})") from None
    signer = node_id_from_cert(leaf)
    if statement.node != node:
        raise CertificationError(f"it is certified for node {statement.node!r}, not {node!r}")
    if signer != statement.node:
        raise CertificationError(f"the statement for node {statement.node!r} is signed with the "
                                 f"certificate of {signer!r}")
    _check_signature(leaf.public_key(), certification.signature, CONTEXT + statement.payload())
    if canonical.parse_time(statement.not_after) > leaf.not_valid_after_utc:
        raise CertificationError("the certification outlives the certificate that signed it")
    if at < statement.not_before:
        raise CertificationError(f"the certification is valid only from {statement.not_before}, "
                                 f"after the head's time {at}")
    if at > statement.not_after:
        raise CertificationError(f"the certification expired at {statement.not_after}, "
                                 f"before the head's time {at}")
    if statement.public_key != key:
        raise CertificationError(f"it certifies {statement.public_key.text}, but the heads are "
                                 f"signed with {key.text}")
    return statement


# -- handover: the old key's word for the new one ----------------------------------------

def _handover_payload(node: str, old: LedgerPublicKey, new: LedgerPublicKey) -> bytes:
    return canonical.dump({"v": 1, "node": node, "old_key": old.text, "new_key": new.text})


def handover(old: LedgerSigningKey, new: LedgerPublicKey) -> bytes:
    return old.sign(HANDOVER_CONTEXT, _handover_payload(old.node_id, old.public_key, new))


def verify_handover(node: str, old: LedgerPublicKey, new: LedgerPublicKey, signature: bytes) -> None:
    """Raises SignatureError unless `old` signed the handover to `new` for `node`."""
    old.verify(signature, HANDOVER_CONTEXT + _handover_payload(node, old, new))


def rotation_details(old: LedgerSigningKey, new: LedgerPublicKey,
                     certification: KeyCertification) -> dict[str, str]:
    """The details of a `ledger_key_rotated` admin entry."""
    return {"old_key": old.public_key.text, "new_key": new.text,
            "old_fingerprint": fingerprint(old.public_key), "new_fingerprint": fingerprint(new),
            "certification": certification.digest(), "handover": handover(old, new).hex()}


def rotation_from(details: Any, node: str) -> tuple[LedgerPublicKey, LedgerPublicKey]:
    """(old, new) of a `ledger_key_rotated` entry's details, after checking its handover.

    Raises:
        SignatureError: malformed, or the handover is not the old key's.
    """
    try:
        old = LedgerPublicKey.from_text(details["old_key"])
        new = LedgerPublicKey.from_text(details["new_key"])
        signature = bytes.fromhex(details["handover"])
    except (KeyError, TypeError, ValueError):
        raise SignatureError("a key rotation entry without old_key, new_key and handover") from None
    verify_handover(node, old, new, signature)
    return old, new


# -- serving --------------------------------------------------------------------------------

def current_head(ledger: Any) -> SignedTreeHead:
    """The head to publish with the current key: the latest one, signed afresh when it
    was signed with an earlier key of this node (a process that ran through a rotation),
    never when its signature is simply wrong."""
    head = ledger.sign_head()
    try:
        head.verify(ledger.public_key)
    except SignatureError:
        try:
            head.verify(KeyRing(ledger.signer.earlier))
        except SignatureError:
            return head  # altered in the database: served as it is, for auditors to name
        head = ledger.sign_head(force=True)
    return head


# -- storage on the node -----------------------------------------------------------------

def follow_partner_rotation(conn: Connection, partner: str, key: LedgerPublicKey,
                            certification: KeyCertification | None,
                            roots: Sequence[x509.Certificate], *, now: str) -> LedgerPublicKey:
    """Move `partner`'s pin to `key` along its certified rotation; returns the old pin.

    The certification must hold for `partner` and `key` now (against this node's
    federation CA) and name the pinned key as the previous one.

    Raises:
        CertificationError: nothing pinned yet, no rotation, or a certification that
            does not hold or does not come from the pinned key.
    """
    pinned = partner_key(conn, partner)
    if pinned is None or pinned == key:
        raise CertificationError(f"partner {partner!r}: no other key is pinned; nothing to follow")
    statement = verify_certification(certification, roots, node=partner, key=key, at=now)
    if statement.previous_key != pinned:
        raise CertificationError(f"partner {partner!r}'s new key is not certified as the "
                                 "successor of the pinned key; confirm it out of band")
    conn.execute(insert(ledger_partner_key_rotations).values(
        partner=partner, old_key=pinned.text, new_key=key.text,
        certification=certification.to_json(), pinned_at=canonical.parse_time(now)))
    return pinned


def store_certification(conn: Connection, certification: KeyCertification, *,
                        now: datetime | None = None) -> None:
    s = certification.statement
    conn.execute(insert(ledger_key_certifications).values(
        node=s.node, public_key=s.public_key.text, certification=certification.to_json(),
        not_after=s.not_after, created_at=now or SYSTEM_CLOCK.now()))


def current_certification(engine: Engine | Connection, key: LedgerPublicKey) -> KeyCertification | None:
    """The newest certification this node holds for `key`, or None."""
    query = (select(ledger_key_certifications.c.certification)
             .where(ledger_key_certifications.c.public_key == key.text)
             .order_by(ledger_key_certifications.c.id.desc()).limit(1))
    if isinstance(engine, Connection):
        text = engine.execute(query).scalar()
    else:
        with engine.connect() as conn:
            text = conn.execute(query).scalar()
    return None if text is None else KeyCertification.from_json(text)

