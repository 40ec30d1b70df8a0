"""Signed receipts: the answering node's proof that it ledgered a query.

Rounds. When the answering node (e.g. the HRSS bureau) finishes a query it appends the
query's "completed" entry to its ledger, commits, and signs a receipt over

    {"v":1, "query": {query_id, asker, answerer, kind, dataset, version, epoch,
                      purpose, elements, outcome, predicate},
     "index": <ledger index of that completed entry>,
     "tree_size": <ledger size after it>, "root": <Merkle root at that size>}

and returns it with the query's summary. The asking node (e.g. the fund centre)
checks it with `verify_receipt` against what it asked and stores it inside its own
"completed" entry. An auditor holding both ledgers can then show that neither side
dropped the query: the asker's ledger carries the answerer's signature over the
answerer's ledger position, and (size, root) in the receipt is a signed commitment
that the answerer's later tree heads must be consistent with.

Who learns what: the receipt repeats metadata both sides already know; it carries no
identifier and no element.
"""
from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from node.core.errors import EvidenceError
from node.ledger import canonical
from node.ledger.canonical import check_bytes, check_node_id, check_size, check_text, check_token
from node.ledger.signing import LedgerPublicKey, LedgerSigningKey, SignatureError

__all__ = ["OUTCOMES", "QueryFacts", "QueryMetadata", "Receipt", "ReceiptError", "ReceiptSignatureError",
           "ReceiptMismatch", "make_receipt", "verify_receipt"]

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
        return {"v": 1, "query": self.query.to_dict(), "index": self.index,
                "tree_size": self.tree_size, "root": self.root.hex(),
                "signature": self.signature.hex()}

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
    """Sign a receipt for `query`, whose completed entry sits at `index` of this node's ledger.

    Call it only after the transaction holding that entry has committed.
    """
    if signer.node_id != query.answerer:
        raise ValueError("only the answering node issues a receipt for a query")
    unsigned = Receipt(query, index, tree_size, root, b"\0" * 64)
    return Receipt(query, index, tree_size, root, signer.sign(_CONTEXT, unsigned.payload()))


def verify_receipt(public_key: LedgerPublicKey, receipt: Receipt, expected: QueryMetadata) -> None:
    """Check the answerer's signature, then every metadata field against `expected`.

    Raises:
        ReceiptSignatureError: not signed by `public_key`.
        ReceiptMismatch: signed, but `field` differs from what the asker recorded.
    """
    try:
        public_key.verify(receipt.signature, _CONTEXT + receipt.payload())
    except SignatureError:
        raise ReceiptSignatureError("receipt signature does not verify with the answerer's "
                                    "ledger key") from None
    for f in fields(QueryMetadata):
        got, want = getattr(receipt.query, f.name), getattr(expected, f.name)
        if got != want:
            raise ReceiptMismatch(f.name, got, want)
