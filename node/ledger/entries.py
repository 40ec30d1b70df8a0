"""Ledger entries: canonical, versioned bytes, one per leaf of the ledger's Merkle tree.

Three types, each a JSON object with "v": 1 and "type" (canonical.py fixes the bytes):

* query    one per phase of a query this node made or answered. The answering node
           writes an "admitted" entry when policy lets the query in (so a crash mid-
           answer still leaves a trace) and a "completed" entry with the outcome;
           refusals are a single "completed" entry. The asking node writes a
           "completed" entry holding the answerer's signed receipt.
* admin    an operator action: dataset registered or retired, key epoch rotated,
           partner or policy changed, node initialised, ledger key certified in the
           federation PKI or rotated (anchor.py).
* witness  a partner's signed tree head this node checked and countersigned, or two of
           its heads that conflict (kept as evidence of a fork).

Entries hold metadata and digests only, never an identifier or a message body; the
encoder refuses identifier-shaped strings (canonical.IdentifierLeak). `decode` refuses
unknown fields, missing fields and non-canonical bytes, so one entry has exactly one
encoding and an auditor can re-derive every leaf hash.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any, ClassVar, Mapping, Union

from node.ledger import canonical
from node.ledger.canonical import CanonicalError
from node.ledger.receipts import QueryFacts, QueryMetadata, Receipt, check_text, check_token
from node.ledger.signing import SignedTreeHead, check_node_id, check_size

__all__ = ["EntryError", "QueryEntry", "AdminEntry", "WitnessEntry", "Entry", "encode", "decode",
           "ADMIN_ACTIONS", "WITNESS_VERDICTS"]

ADMIN_ACTIONS = ("dataset_registered", "dataset_retired", "key_rotated", "partner_changed",
                 "policy_changed", "node_initialised", "threshold_prepared", "dataset_purged",
                 "epoch_pruned", "own_ledger_conflict", "own_ledger_resolved",
                 "predicate_prepared", "damaged_ledger_accepted",
                 "ledger_key_certified", "ledger_key_rotated", "partner_key_rotated",
                 "node_backed_up", "node_restored", "job_files_deleted")
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
    """The canonical bytes of `entry` (the ledger leaf).

    Raises:
        EntryError: not an entry type.
        canonical.IdentifierLeak: a string shaped like a resident identifier.
    """
    if not isinstance(entry, tuple(_TYPES.values())):
        raise EntryError(f"{type(entry).__name__} is not a ledger entry")
    return canonical.dump(entry.to_dict())


def decode(data: bytes) -> Entry:
    """Parse canonical entry bytes.

    Raises:
        EntryError: not canonical, unknown version or type, unknown or missing fields,
            or a field that fails validation.
    """
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
