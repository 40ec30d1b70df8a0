"""Ledger entries: canonical, versioned bytes, one per leaf of the ledger's Merkle tree; and
the signed receipts an answering node gives for the queries it ledgered.

Three types, each a JSON object with "v": 1 and "type" (canonical.py fixes the bytes):

* query    one per phase of a query this node made or answered. The answerer writes an
           "admitted" entry when policy lets the query in (a crash mid-answer still
           leaves a trace) and a "completed" entry with the outcome (a refusal: that
           one only); the asker, a "completed" entry holding the answerer's receipt.
* admin    an operator action: dataset registered or retired, key epoch rotated, partner
           or policy changed, node initialised, ledger key certified or rotated (anchor.py).
* witness  a partner's signed tree head this node checked and countersigned, or two of
           its heads that conflict (kept as evidence of a fork).

Entries hold metadata and digests only, never an identifier or a message body (the
encoder refuses identifier-shaped strings: canonical.IdentifierLeak). `decode` refuses
unknown or missing fields and non-canonical bytes: one entry has exactly one encoding,
and an auditor can re-derive every leaf hash.

Receipts. When the answering node (e.g. the HRSS bureau) finishes a query it appends the
query's "completed" entry to its ledger, commits, and signs a receipt over
``{"v":1, "query": {the query's metadata}, "index": <ledger index of that entry>,
"tree_size": <ledger size after it>, "root": <Merkle root at that size>}`` and returns
it with the query's summary. The asking node (e.g. the fund centre) checks it with
`verify_receipt` against what it asked and stores it inside its own "completed" entry.
An auditor holding both ledgers can then show that neither side dropped the query: the
asker's ledger carries the answerer's signature over the answerer's ledger position, and
(size, root) is a signed commitment the answerer's later tree heads must be consistent
with. The receipt repeats metadata both sides already know: no identifier, no element.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Union

from node.core.errors import EvidenceError
from node.ledger import canonical
from node.ledger.canonical import (CanonicalError, check_bytes, check_node_id, check_size, check_text,
                                   check_token)
from node.ledger.signing import LedgerPublicKey, LedgerSigningKey, SignatureError, SignedTreeHead

__all__ = ["EntryError", "QueryEntry", "AdminEntry", "WitnessEntry", "Entry", "encode", "decode",
           "ADMIN_ACTIONS", "WITNESS_VERDICTS", "OUTCOMES", "QueryFacts", "QueryMetadata",
           "Receipt", "ReceiptError", "ReceiptSignatureError", "ReceiptMismatch", "make_receipt",
           "verify_receipt"]


# -- receipts ----------------------------------------------------------------------------

_CONTEXT = b"shuqiao/ledger/receipt/v1\n"
OUTCOMES = ("admitted", "answered", "refused", "failed", "aborted", "broken_by_asker")


class ReceiptError(EvidenceError, ValueError):
    """A receipt that cannot be trusted for this query."""


class ReceiptSignatureError(ReceiptError):
    """The receipt is not signed by the answering node's ledger key."""


class ReceiptMismatch(ReceiptError):
    """The receipt is validly signed but describes another query; `field` says where."""

    def __init__(self, field: str, receipt_value: Any, expected: Any) -> None:
        self.field = field
        super().__init__(f"receipt field {field!r} is {receipt_value!r}, expected {expected!r}")


@dataclass(frozen=True)
class QueryFacts:
    """The facts of one query that its receipt and every ledger entry about it state."""
    query_id: str
    asker: str
    answerer: str
    kind: str
    dataset: str
    version: int
    epoch: int
    purpose: str
    elements: int
    outcome: str


@dataclass(frozen=True)
class QueryMetadata(QueryFacts):
    """What both sides of one query agree on; no identifier, no element."""
    predicate: str = ""  # canonical predicate text of predicate queries; "" for all rows
    # The consent digest (node/policy/consent.py) both sides recorded; "" (and then absent from
    # the canonical form, as in receipts made before it existed) when none was given.
    authorisation_digest: str = ""

    def __post_init__(self) -> None:
        check_token(self.query_id, "query_id")
        check_node_id(self.asker, "asker")
        check_node_id(self.answerer, "answerer")
        check_token(self.kind, "kind")
        check_text(self.dataset, "dataset", 64)
        check_text(self.purpose, "purpose", 64)
        check_text(self.predicate, "predicate", 512)
        if self.authorisation_digest:
            canonical.check_hex(self.authorisation_digest, "authorisation_digest", 32)
        for name in ("version", "epoch", "elements"):
            check_size(getattr(self, name), name)
        if self.outcome not in OUTCOMES:
            raise canonical.CanonicalError(f"outcome must be one of {', '.join(OUTCOMES)}")

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "authorisation_digest" or self.authorisation_digest}

    @classmethod
    def from_dict(cls, d: Any) -> QueryMetadata:
        names = {f.name for f in fields(cls)}
        if isinstance(d, dict) and "authorisation_digest" not in d:
            names.discard("authorisation_digest")
        if not isinstance(d, dict) or set(d) != names:
            raise canonical.CanonicalError(f"query metadata has exactly {', '.join(sorted(names))}")
        return cls(**d)


@dataclass(frozen=True)
class Receipt:
    query: QueryMetadata
    index: int
    tree_size: int
    root: bytes
    signature: bytes

    def __post_init__(self) -> None:
        check_size(self.index, "receipt index")
        check_size(self.tree_size, "receipt tree_size")
        if self.tree_size <= self.index:
            raise canonical.CanonicalError("receipt tree_size must exceed its index")
        check_bytes(self.root, 32, "receipt root")
        check_bytes(self.signature, 64, "receipt signature")

    def payload(self) -> bytes:
        return canonical.dump({"v": 1, "query": self.query.to_dict(), "index": self.index,
                               "tree_size": self.tree_size, "root": self.root.hex()})

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "query": self.query.to_dict(), "index": self.index, "tree_size":
                self.tree_size, "root": self.root.hex(), "signature": self.signature.hex()}

    @classmethod
    def from_dict(cls, d: Any) -> Receipt:
        keys = {"v", "query", "index", "tree_size", "root", "signature"}
        if not isinstance(d, dict) or set(d) != keys:
            raise canonical.CanonicalError(f"a receipt has exactly {', '.join(sorted(keys))}")
        if d["v"] != 1 or isinstance(d["v"], bool):
            raise canonical.CanonicalError("unsupported receipt version")
        return cls(QueryMetadata.from_dict(d["query"]), d["index"], d["tree_size"],
                   canonical.check_hex(d["root"], "receipt root", 32),
                   canonical.check_hex(d["signature"], "receipt signature", 64))

    def to_bytes(self) -> bytes:
        """Canonical JSON of the whole receipt, for the wire (proto `bytes receipt`)."""
        return canonical.dump(self.to_dict())

    @classmethod
    def from_bytes(cls, data: bytes) -> Receipt:
        try:
            return cls.from_dict(canonical.parse(data))
        except canonical.CanonicalError as exc:
            raise ReceiptError(f"malformed receipt: {exc}") from None


def make_receipt(signer: LedgerSigningKey, query: QueryMetadata, index: int, tree_size: int,
                 root: bytes) -> Receipt:
    """Sign a receipt for `query`, whose completed entry sits at `index` of this node's
    ledger; only after the transaction holding that entry has committed."""
    if signer.node_id != query.answerer:
        raise ValueError("only the answering node issues a receipt for a query")
    unsigned = Receipt(query, index, tree_size, root, b"\0" * 64)
    return Receipt(query, index, tree_size, root, signer.sign(_CONTEXT, unsigned.payload()))


def verify_receipt(public_key: LedgerPublicKey, receipt: Receipt, expected: QueryMetadata) -> None:
    """Check the answerer's signature, then every metadata field against `expected`.
    Raises ReceiptSignatureError (not signed by `public_key`) or ReceiptMismatch (signed,
    but `field` differs from what the asker recorded)."""
    try:
        public_key.verify(receipt.signature, _CONTEXT + receipt.payload())
    except SignatureError:
        raise ReceiptSignatureError("receipt signature does not verify with the answerer's "
                                    "ledger key") from None
    for f in fields(QueryMetadata):
        got, want = getattr(receipt.query, f.name), getattr(expected, f.name)
        if got != want:
            raise ReceiptMismatch(f.name, got, want)


# -- entries -----------------------------------------------------------------------------

ADMIN_ACTIONS = ("dataset_registered", "dataset_retired", "key_rotated", "partner_changed",
                 "policy_changed", "node_initialised", "threshold_prepared", "dataset_purged",
                 "epoch_pruned", "own_ledger_conflict", "own_ledger_resolved", "predicate_prepared",
                 "damaged_ledger_accepted", "ledger_key_certified", "ledger_key_rotated",
                 "partner_key_rotated", "node_backed_up", "node_restored")
WITNESS_VERDICTS = ("cosigned", "fork", "rollback", "inconsistent", "resolved")
_DETAIL_KEY = re.compile(r"[a-z][a-z0-9_]{0,31}")
EntryError = CanonicalError


def _exact_keys(d: Any, required: set[str], optional: set[str], what: str) -> None:
    if not isinstance(d, dict):
        raise EntryError(f"a {what} entry is a JSON object")
    keys = set(d)
    unknown = keys - required - optional
    if unknown:
        raise EntryError(f"unknown field(s) in {what} entry: {', '.join(sorted(unknown))}")
    missing = required - keys
    if missing:
        raise EntryError(f"{what} entry lacks field(s): {', '.join(sorted(missing))}")


@dataclass(frozen=True)
class QueryEntry(QueryFacts):
    type: ClassVar[str] = "query"
    phase: str  # admitted | completed
    role: str  # asker | answerer
    reason: str
    time: str
    matched: int | None = None  # asker only
    authorisation_digest: str | None = None  # hex SHA-256 of the authorising document
    receipt: Receipt | None = None  # asker only: the answerer's signed receipt
    predicate: str | None = None  # canonical predicate text (predicate and labeled queries)
    epsilon_micro: int | None = None  # differential privacy spent, in millionths

    def __post_init__(self) -> None:
        if self.predicate == "":
            object.__setattr__(self, "predicate", None)  # one encoding for "all rows"
        self.metadata()  # validates the shared fields
        if self.phase not in ("admitted", "completed"):
            raise EntryError("phase must be admitted or completed")
        if self.role not in ("asker", "answerer"):
            raise EntryError("role must be asker or answerer")
        if (self.phase == "admitted") != (self.outcome == "admitted"):
            raise EntryError("outcome admitted goes with phase admitted, and only with it")
        check_text(self.reason, "reason", 500)
        canonical.check_time(self.time, "time")
        if self.matched is not None:
            if self.role != "asker":
                raise EntryError("only the asker knows how many elements matched")
            check_size(self.matched, "matched")
        if self.authorisation_digest is not None:
            canonical.check_hex(self.authorisation_digest, "authorisation_digest", 32)
        if self.epsilon_micro is not None:
            check_size(self.epsilon_micro, "epsilon_micro")
        if self.receipt is not None:
            if not isinstance(self.receipt, Receipt):
                raise EntryError("receipt must be a Receipt")
            if self.role != "asker" or self.phase != "completed":
                raise EntryError("only the asker's completed entry holds a receipt")

    def metadata(self) -> QueryMetadata:
        return QueryMetadata(self.query_id, self.asker, self.answerer, self.kind, self.dataset,
                             self.version, self.epoch, self.purpose, self.elements, self.outcome,
                             self.predicate or "", self.authorisation_digest or "")

    @property
    def partner(self) -> str:
        return self.answerer if self.role == "asker" else self.asker

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"v": 1, "type": self.type}
        for name in _QUERY_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue  # optional fields are absent, never null: one encoding per entry
            d[name] = value.to_dict() if isinstance(value, Receipt) else value
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> QueryEntry:
        optional = {"matched", "authorisation_digest", "receipt", "predicate", "epsilon_micro"}
        required = {f.name for f in fields(cls)} - optional | {"v", "type"}
        _exact_keys(d, required, optional, "query")
        args = {k: v for k, v in d.items() if k not in ("v", "type")}
        if "receipt" in args:
            args["receipt"] = Receipt.from_dict(args["receipt"])
        return cls(**args)


_QUERY_FIELDS = tuple(f.name for f in fields(QueryEntry))


@dataclass(frozen=True)
class AdminEntry:
    type: ClassVar[str] = "admin"
    action: str
    subject: str  # what was acted on: a dataset name, a partner id, "node", ...
    actor: str  # who acted: an operator account or "cli"
    time: str
    details: Mapping[str, str | int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.action not in ADMIN_ACTIONS:
            raise EntryError(f"action must be one of {', '.join(ADMIN_ACTIONS)}")
        check_text(self.subject, "subject", 128)
        check_token(self.actor, "actor")
        canonical.check_time(self.time, "time")
        if not isinstance(self.details, Mapping) or len(self.details) > 32:
            raise EntryError("details is a mapping of at most 32 items")
        for key, value in self.details.items():
            if not isinstance(key, str) or not _DETAIL_KEY.fullmatch(key):
                raise EntryError("details keys are lowercase names")
            if isinstance(value, str):
                check_text(value, f"details.{key}", 256)
            elif isinstance(value, int) and not isinstance(value, bool):
                if abs(value) > canonical.MAX_INT:
                    raise EntryError(f"details.{key} is out of range")
            else:
                raise EntryError(f"details.{key} must be a string or an integer")
        object.__setattr__(self, "details", MappingProxyType(dict(self.details)))

    def to_dict(self) -> dict[str, Any]:
        return {"v": 1, "type": self.type, "action": self.action, "subject": self.subject,
                "actor": self.actor, "time": self.time, "details": dict(self.details)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AdminEntry:
        _exact_keys(d, {"v", "type", "action", "subject", "actor", "time", "details"}, set(), "admin")
        return cls(d["action"], d["subject"], d["actor"], d["time"], d["details"])


@dataclass(frozen=True)
class WitnessEntry:
    type: ClassVar[str] = "witness"
    partner: str
    verdict: str  # cosigned | fork | rollback | inconsistent | resolved (the true head, by an operator)
    head: SignedTreeHead  # the head checked (and countersigned if verdict is cosigned)
    time: str
    conflicting_head: SignedTreeHead | None = None  # the earlier head it contradicts

    def __post_init__(self) -> None:
        check_node_id(self.partner, "partner")
        if self.verdict not in WITNESS_VERDICTS:
            raise EntryError(f"verdict must be one of {', '.join(WITNESS_VERDICTS)}")
        canonical.check_time(self.time, "time")
        if not isinstance(self.head, SignedTreeHead) or self.head.node != self.partner:
            raise EntryError("head must be a signed tree head of the partner")
        if (self.verdict in ("cosigned", "resolved")) != (self.conflicting_head is None):
            raise EntryError("a conflicting head goes with a conflict verdict, and only with it")
        if self.conflicting_head is not None and self.conflicting_head.node != self.partner:
            raise EntryError("conflicting_head must be a head of the same partner")

    def to_dict(self) -> dict[str, Any]:
        d = {"v": 1, "type": self.type, "partner": self.partner, "verdict": self.verdict,
             "head": self.head.to_dict(), "time": self.time}
        if self.conflicting_head is not None:
            d["conflicting_head"] = self.conflicting_head.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> WitnessEntry:
        _exact_keys(d, {"v", "type", "partner", "verdict", "head", "time"},
                    {"conflicting_head"}, "witness")
        other = d.get("conflicting_head")
        return cls(d["partner"], d["verdict"], SignedTreeHead.from_dict(d["head"]), d["time"],
                   None if other is None else SignedTreeHead.from_dict(other))


Entry = Union[QueryEntry, AdminEntry, WitnessEntry]
_TYPES: dict[str, type] = {"query": QueryEntry, "admin": AdminEntry, "witness": WitnessEntry}


def encode(entry: Entry) -> bytes:
    """The canonical bytes of `entry` (the ledger leaf). Raises EntryError (not an entry
    type) or canonical.IdentifierLeak (a string shaped like a resident identifier)."""
    if not isinstance(entry, tuple(_TYPES.values())):
        raise EntryError(f"{type(entry).__name__} is not a ledger entry")
    return canonical.dump(entry.to_dict())


def decode(data: bytes) -> Entry:
    """Parse canonical entry bytes. Raises EntryError: not canonical, unknown version or
    type, unknown or missing fields, or a field that fails validation."""
    d = canonical.parse(data)
    if d.get("v") != 1 or isinstance(d.get("v"), bool):
        raise EntryError("unsupported entry version")
    kind = d.get("type")
    cls = _TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise EntryError("unknown entry type")
    try:
        entry = cls.from_dict(d)
    except TypeError:
        raise EntryError("malformed entry") from None
    if encode(entry) != bytes(data):  # e.g. an empty optional field written out
        raise EntryError("not the canonical encoding of this entry")
    return entry


def filter_columns(entry: Entry) -> dict[str, Any]:
    """Filter columns copied out of the entry (see tables.ledger_entries)."""
    cols: dict[str, Any] = {"type": entry.type, "time": entry.time, "query_id": None,
                            "partner": None, "dataset": None, "purpose": None, "outcome": None}
    if isinstance(entry, QueryEntry):
        cols.update(query_id=entry.query_id, partner=entry.partner, dataset=entry.dataset,
                    purpose=entry.purpose, outcome=entry.outcome)
    elif isinstance(entry, WitnessEntry):
        cols.update(partner=entry.partner, outcome=entry.verdict)
    elif isinstance(entry, AdminEntry):
        if entry.action == "partner_changed":
            cols["partner"] = entry.subject[:64]
        elif entry.action in ("dataset_registered", "dataset_retired", "key_rotated",
                               "threshold_prepared", "dataset_purged", "epoch_pruned",
                               "predicate_prepared"):
            cols["dataset"] = entry.subject[:64]
    return cols
