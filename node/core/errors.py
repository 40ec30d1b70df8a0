"""The node's one error hierarchy: every exception class under node/ derives from ShuqiaoError.

    ShuqiaoError
    ├── ConfigError          the config file is missing, not TOML, or breaks the schema
    ├── NotInitialised       `shuqiao init` has not run (or stored data predates it)
    ├── StorageError         stored state is damaged, locked, or cannot be opened, backed
    │                        up or restored (a sealed secret that does not open)
    ├── EvidenceError    evidence does not verify: a signature, receipt, certification,
    │                        canonical bytes
    ├── InvalidInput         text or a file given to the node is not valid (a rule, a
    │                        predicate, a dataset to register); the message says where
    ├── PartnerError         what a partner did: refused, failed, or could not be reached
    └── Refusal              this node refuses a peer's request, deliberately
        ├── NotServed            well formed, but not answered in this node's present state
        ├── InvalidRequest       malformed, or a size no grant allows
        │   └── ProtocolViolation    a message out of turn, malformed, or past its round's limit
        ├── NotPermitted         the caller may not ask this (kind, purpose, another's head)
        ├── Unauthenticated      the caller's certificate names no node
        ├── NotFound             nothing by that name is available to the caller
        ├── AlreadyUsed          an id the caller sent was used before
        ├── LimitReached         a quota, a budget or a call slot is used up
        ├── OutOfRange           a size or index beyond what exists
        └── StreamEnded          the caller ended its stream before the query finished

Which gRPC status each class means lives in one table, node/transport/status.py; this
module knows nothing of gRPC, so every layer (the CLI too) may raise and catch these.
Only a Refusal's message ever reaches a peer, and it is written for the peer: no
identifier, no value, no internals. Everything else that escapes a handler is an
incident (node/core/incidents.py): the peer gets an opaque INTERNAL with an incident id.

Classes that were ValueErrors before keep ValueError as a second base, so code that
catches ValueError still catches them.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import grpc


class ShuqiaoError(Exception):
    """Base of every error the node raises on purpose."""


class ConfigError(ShuqiaoError):
    """The config file is missing, not TOML, or does not match the schema."""


class NotInitialised(ShuqiaoError):
    """The node lacks what `shuqiao init` creates, or stored data predates it."""


class StorageError(ShuqiaoError):
    """The node's stored state is damaged, held by another process, or cannot be opened,
    backed up or restored: an operator must look."""


class EvidenceError(ShuqiaoError):
    """Evidence that does not verify or does not parse; the message says which check."""


class InvalidInput(ShuqiaoError):
    """Text or a file given to the node is not valid; the message says where, not what."""


class PartnerError(ShuqiaoError):
    """A partner refused, failed or could not be reached; `code` is the gRPC status."""

    def __init__(self, partner: str, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(f"partner {partner!r}: {message}")
        self.partner = partner
        self.code = code


class Refusal(ShuqiaoError):
    """This node refuses a peer's request; `reason` is the message the peer reads.

    The base class itself means "not now", as NotServed does: the request is well
    formed, but this node does not answer it in its present state (a version not
    served, a key epoch past its grace period, a head it cannot judge).
    """

    def __init__(self, reason: str = "") -> None:
        super().__init__(reason)
        self.reason = reason


class NotServed(Refusal):
    """The request is well formed, but this node does not answer it in its present state:
    a version, table or key epoch it does not serve, a column that is not registered, a
    table still being prepared, data the protocol cannot answer. Asking again later (or
    after listing datasets and syncing) may succeed."""


class InvalidRequest(Refusal):
    """The request is malformed, or asks in a form no grant allows (too few elements)."""


class ProtocolViolation(InvalidRequest):
    """The peer broke the protocol: a message out of turn, malformed, or past its limit."""


class NotPermitted(Refusal):
    """The caller is known but may not ask this."""


class Unauthenticated(Refusal):
    """The caller's certificate does not name a node of the federation."""


class NotFound(Refusal):
    """Nothing by that name is available to the caller (absent or not granted alike)."""


class AlreadyUsed(Refusal):
    """An identifier the caller chose (a query id) was used before."""


class LimitReached(Refusal):
    """A quota, a privacy budget, a daily limit or a call slot is used up."""


class OutOfRange(Refusal):
    """A size or an index beyond what exists."""


class StreamEnded(Refusal):
    """The caller ended its stream before the query was finished."""
