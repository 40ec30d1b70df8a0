"""The node's ledger signing key, signed tree heads and witness cosignatures.

A node signs (a) tree heads: "my ledger has `size` entries and Merkle root `root` at
`time`", (b) receipts for queries it answered (see entries.py) and (c) cosignatures of
a partner's tree head it has checked for consistency (witnessing). All three are
Ed25519 (RFC 8032) signatures from pyca/cryptography over canonical JSON, each behind
its own domain-separation prefix so a signature made for one purpose never verifies
as another.

The signing key is created once per node (a rotation adds a generation, see anchor.py)
and kept sealed under the node's KEK
(purpose "ledger-signing-key/v1") in the `ledger_signing_keys` table; the public half
is published as "ed25519:<64 hex digits>" and pinned by auditors and partners.
The secret half does not print and cannot be pickled (house style: keys are typed
objects, secret and public halves apart).
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import Connection, Engine, bindparam, insert, select
from sqlalchemy.exc import IntegrityError

from node.core.clock import SYSTEM_CLOCK
from node.core.errors import EvidenceError
from node.keys.secrets import KeyEncryptionKey, Unpicklable
from node.ledger import canonical
from node.ledger.canonical import check_bytes, check_node_id, check_size
from node.ledger.tables import ledger_partner_key_rotations, ledger_partner_keys, ledger_signing_keys

__all__ = ["KEY_PURPOSE", "SignatureError", "KeyChanged", "LedgerPublicKey", "LedgerSigningKey",
           "SignedTreeHead", "Cosignature", "KeyRing", "load_or_create_signer", "store_signer",
           "pin_partner_key", "partner_key"]

KEY_PURPOSE = "ledger-signing-key/v1"
_HEAD_CONTEXT = b"shuqiao/ledger/tree-head/v1\n"
_COSIGN_CONTEXT = b"shuqiao/ledger/cosignature/v1\n"
_SIG_SIZE = 64


class SignatureError(EvidenceError, ValueError):
    """A signature, or a signed structure, that does not verify or does not parse."""


class LedgerPublicKey:
    """A node's published ledger key; compares and hashes by its 32 raw bytes."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise SignatureError("an Ed25519 public key is 32 bytes")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @classmethod
    def from_text(cls, text: str) -> LedgerPublicKey:
        """Parse "ed25519:<64 lowercase hex digits>"."""
        if not isinstance(text, str) or not text.startswith("ed25519:"):
            raise SignatureError("a ledger public key looks like ed25519:<64 hex digits>")
        try:
            return cls(canonical.check_hex(text[len("ed25519:"):], "public key", 32))
        except canonical.CanonicalError:
            raise SignatureError("a ledger public key looks like ed25519:<64 hex digits>") from None

    @property
    def text(self) -> str:
        return "ed25519:" + self.raw.hex()

    def verify(self, signature: bytes, message: bytes) -> None:
        """Raises SignatureError unless `signature` is this key's over `message`."""
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise SignatureError("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, LedgerPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)

    def __repr__(self) -> str:
        return f"LedgerPublicKey({self.text!r})"


class LedgerSigningKey(Unpicklable):
    """The secret half. Create with `generate` or `load_or_create_signer`; it does not pickle."""

    __slots__ = ("_key", "node_id", "earlier")

    def __init__(self, key: Ed25519PrivateKey, node_id: str,
                 earlier: tuple[LedgerPublicKey, ...] = ()) -> None:
        self._key = key
        self.node_id = check_node_id(node_id, "node id")
        self.earlier = earlier  # public keys of this node's earlier generations (rotations)

    @classmethod
    def generate(cls, node_id: str) -> LedgerSigningKey:
        return cls(Ed25519PrivateKey.generate(), node_id)

    @classmethod
    def unseal(cls, kek: KeyEncryptionKey, blob: bytes, node_id: str,
               earlier: tuple[LedgerPublicKey, ...] = ()) -> LedgerSigningKey:
        return cls(Ed25519PrivateKey.from_private_bytes(kek.unseal(blob, purpose=KEY_PURPOSE)),
                   node_id, earlier)

    def seal(self, kek: KeyEncryptionKey) -> bytes:
        """The secret sealed under the KEK: the only way it leaves this object."""
        return kek.seal(self._key.private_bytes_raw(), purpose=KEY_PURPOSE)

    @property
    def public_key(self) -> LedgerPublicKey:
        return LedgerPublicKey(self._key.public_key().public_bytes_raw())

    @property
    def keyring(self) -> KeyRing:
        """Every key this node ever signed heads with: its stored heads verify with one."""
        return KeyRing((self.public_key, *self.earlier))

    def sign(self, context: bytes, payload: bytes) -> bytes:
        """Sign `context || payload`; the context names what is signed (domain separation)."""
        if not context.endswith(b"\n") or not context.startswith(b"shuqiao/"):
            raise ValueError("signing needs a shuqiao/... domain-separation context")
        return self._key.sign(context + payload)

    def sign_head(self, size: int, root: bytes, time: str) -> SignedTreeHead:
        unsigned = SignedTreeHead(self.node_id, size, root, time, b"\0" * _SIG_SIZE)
        return unsigned._replace_signature(self.sign(_HEAD_CONTEXT, unsigned.payload()))

    def cosign(self, head: SignedTreeHead, time: str) -> Cosignature:
        """Countersign a partner's head. Check it first (witness.py does)."""
        unsigned = Cosignature(self.node_id, time, head, b"\0" * _SIG_SIZE)
        return Cosignature(self.node_id, time, head, self.sign(_COSIGN_CONTEXT, unsigned.payload()))

    def __repr__(self) -> str:
        return f"<LedgerSigningKey {self.node_id}: redacted>"

    __str__ = __repr__


class KeyRing:
    """Verifies like a LedgerPublicKey, accepting a signature by any of `keys`."""

    def __init__(self, keys: tuple[LedgerPublicKey, ...]) -> None:
        self.keys = keys

    def verify(self, signature: bytes, message: bytes) -> None:
        for key in self.keys:
            try:
                return key.verify(signature, message)
            except SignatureError:
                continue
        raise SignatureError("signature does not verify")


@dataclass(frozen=True)
class SignedTreeHead:
    """{"v":1,"node","size","root","time"} in canonical JSON, and its signature."""

    node: str
    size: int
    root: bytes
    time: str
    signature: bytes

    def __post_init__(self) -> None:
        check_node_id(self.node, "head node")
        check_size(self.size, "head size")
        check_bytes(self.root, 32, "head root")
        canonical.check_time(self.time, "head time")
        check_bytes(self.signature, _SIG_SIZE, "head signature")

    def _replace_signature(self, signature: bytes) -> SignedTreeHead:
        return SignedTreeHead(self.node, self.size, self.root, self.time, signature)

    def payload(self) -> bytes:
        """The canonical bytes the signature covers (after the domain prefix)."""
        return canonical.dump({"v": 1, "node": self.node, "size": self.size,
                               "root": self.root.hex(), "time": self.time})

    def verify(self, public_key: LedgerPublicKey) -> None:
        """Raises SignatureError unless the node's key signed exactly this head."""
        public_key.verify(self.signature, _HEAD_CONTEXT + self.payload())

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "node": self.node, "size": self.size, "root": self.root.hex(),
                "time": self.time, "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, d: Any) -> SignedTreeHead:
        if not isinstance(d, dict) or set(d) != {"v", "node", "size", "root", "time", "signature"}:
            raise canonical.CanonicalError("a tree head has exactly v, node, size, root, time, signature")
        if d["v"] != 1 or isinstance(d["v"], bool):
            raise canonical.CanonicalError("unsupported tree head version")
        return cls(d["node"], d["size"], canonical.check_hex(d["root"], "head root", 32),
                   d["time"], canonical.check_hex(d["signature"], "head signature", _SIG_SIZE))

    def __str__(self) -> str:
        return f"tree head of {self.node}: size {self.size}, root {self.root.hex()[:16]}…, {self.time}"


@dataclass(frozen=True)
class Cosignature:
    """A witness's countersignature of a partner's signed tree head."""

    witness: str
    time: str
    head: SignedTreeHead
    signature: bytes

    def __post_init__(self) -> None:
        check_node_id(self.witness, "witness")
        canonical.check_time(self.time, "cosignature time")
        check_bytes(self.signature, _SIG_SIZE, "cosignature")

    def payload(self) -> bytes:
        return canonical.dump({"v": 1, "witness": self.witness, "time": self.time,
                               "head": self.head.to_dict()})

    def verify(self, witness_key: LedgerPublicKey) -> None:
        witness_key.verify(self.signature, _COSIGN_CONTEXT + self.payload())

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "witness": self.witness, "time": self.time, "head": self.head.to_dict(),
                "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, d: Any) -> Cosignature:
        if not isinstance(d, dict) or set(d) != {"v", "witness", "time", "head", "signature"}:
            raise canonical.CanonicalError("a cosignature has exactly v, witness, time, head, signature")
        if d["v"] != 1 or isinstance(d["v"], bool):
            raise canonical.CanonicalError("unsupported cosignature version")
        return cls(d["witness"], d["time"], SignedTreeHead.from_dict(d["head"]),
                   canonical.check_hex(d["signature"], "cosignature", _SIG_SIZE))


def load_or_create_signer(engine: Engine, kek: KeyEncryptionKey, node_id: str, *,
                          now: datetime | None = None) -> LedgerSigningKey:
    """The node's ledger key: its newest generation unsealed from the database, or the
    first generation created there on first use.

    Two processes starting at once may both generate a key; the unique constraint lets
    exactly one insert win and the other loads the winner's key.
    """
    c = ledger_signing_keys.c
    query = (select(c.generation, c.public_key, c.sealed_key).where(c.node == node_id)
             .order_by(c.generation.desc()))
    with engine.connect() as conn:
        rows = conn.execute(query).all()
    if rows:
        earlier = tuple(LedgerPublicKey.from_text(r.public_key) for r in rows[1:])
        return LedgerSigningKey.unseal(kek, rows[0].sealed_key, node_id, earlier)
    signer = LedgerSigningKey.generate(node_id)
    try:
        store_signer(engine, kek, signer, 1, now=now)
    except IntegrityError:
        return load_or_create_signer(engine, kek, node_id, now=now)
    return signer


def store_signer(conn: Engine | Connection, kek: KeyEncryptionKey, signer: LedgerSigningKey,
                 generation: int, *, now: datetime | None = None) -> None:
    """Insert `signer` sealed under the KEK as `generation` (on `conn`'s transaction),
    created `now` (the caller's clock; the system clock if not given)."""
    values = dict(node=signer.node_id, generation=generation, public_key=signer.public_key.text,
                  sealed_key=signer.seal(kek), created_at=now or SYSTEM_CLOCK.now())
    if isinstance(conn, Connection):
        conn.execute(insert(ledger_signing_keys).values(**values))
    else:
        with conn.begin() as own:
            own.execute(insert(ledger_signing_keys).values(**values))


class KeyChanged(SignatureError):
    """A partner presents another ledger key than the one pinned for it."""


def pin_partner_key(engine: Engine, partner: str, key: LedgerPublicKey, *,
                    now: datetime | None = None) -> LedgerPublicKey:
    """Trust on first use: pin `key` for `partner`, or check it against the pinned one.

    Raises:
        KeyChanged: another key is pinned; the pin moves only along the partner's
            certified rotation (anchor.follow_partner_rotation, `shuqiao ledger
            follow-rotation`), an operator's act.
    """
    check_node_id(partner, "partner")
    pinned = partner_key(engine, partner)
    if pinned is None:
        try:
            with engine.begin() as conn:
                conn.execute(insert(ledger_partner_keys).values(
                    partner=partner, public_key=key.text, pinned_at=now or SYSTEM_CLOCK.now()))
            return key
        except IntegrityError:
            pinned = partner_key(engine, partner)  # pinned concurrently
    if pinned != key:
        raise KeyChanged(f"partner {partner!r} presents another ledger key than the one pinned")
    return pinned


def partner_key(engine: Engine | Connection, partner: str) -> LedgerPublicKey | None:
    """The ledger key pinned for `partner` (moved by any rotation followed since), if any."""
    moved, first, given = _PINNED_QUERIES
    if isinstance(engine, Connection):
        text = engine.execute(moved, {given: partner}).scalar() or engine.execute(first, {given: partner}).scalar()
    else:
        with engine.connect() as conn:
            text = conn.execute(moved, {given: partner}).scalar() or conn.execute(first, {given: partner}).scalar()
    return None if text is None else LedgerPublicKey.from_text(text)


# Built once (every query's receipt is checked against the pinned key): the partner is bound.
_PINNED_QUERIES = (
    select(ledger_partner_key_rotations.c.new_key)
    .where(ledger_partner_key_rotations.c.partner == bindparam("pinned_partner"))
    .order_by(ledger_partner_key_rotations.c.id.desc()).limit(1),
    select(ledger_partner_keys.c.public_key).where(ledger_partner_keys.c.partner == bindparam("pinned_partner")),
    "pinned_partner")
