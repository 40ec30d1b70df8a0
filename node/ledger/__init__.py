"""The verifiable query ledger (DESIGN.md, "Ledger"): entries, tree heads, receipts, audit.

Every query a node made or answered, and every admin action, is an entry in an
append-only RFC 9162 Merkle tree stored next to the node's data; the node signs tree
heads with its Ed25519 ledger key, answering nodes sign receipts that asking nodes keep,
and partners cosign each other's heads. Auditors verify over HTTP, gRPC or an export.

Modules: canonical (bytes, identifier guard, field checks), entries (and receipts),
signing (keys, heads, cosignatures, partner key pins), anchor (ledger keys certified in
the federation PKI, rotations), tables (schema, triggers, compiled append statements), log
(the Ledger), integrity (verify_all), witness (+ witness_gossip, witness_evidence,
alarms), sources (LogSource, exports), known (an auditor's state), trust (which key an
auditor trusts), audit (verify), crosscheck, http (FastAPI app + HTTP source),
grpc_service (servicer + gRPC source).
The FastAPI and gRPC modules are not imported here, so importing the ledger stays cheap.

May import: node.transport (the gRPC status of its refusals), node.keys, node.storage, node.core
(and protocols). Admin entries and the ledger key's
certification, which need a whole node, live in node.runtime.
"""
from __future__ import annotations

from node.ledger.entries import AdminEntry, Entry, QueryEntry, WitnessEntry, decode, encode
from node.ledger.log import EntryFilter, HeadPolicy, Ledger, LedgerCorrupt, LedgerError
from node.ledger.entries import QueryMetadata, Receipt, make_receipt, verify_receipt
from node.ledger.signing import (Cosignature,
    KeyChanged,
    LedgerPublicKey,
    LedgerSigningKey,
    SignedTreeHead,
    load_or_create_signer,
    partner_key,
    pin_partner_key)
from node.ledger.tables import install_ledger_triggers

__all__ = ["AdminEntry", "Cosignature", "Entry", "EntryFilter", "HeadPolicy", "KeyChanged",
           "Ledger", "LedgerCorrupt", "LedgerError", "LedgerPublicKey", "LedgerSigningKey",
           "QueryEntry", "QueryMetadata", "Receipt", "SignedTreeHead", "WitnessEntry",
           "decode", "encode", "install_ledger_triggers", "load_or_create_signer",
           "make_receipt", "partner_key", "pin_partner_key", "verify_receipt"]
