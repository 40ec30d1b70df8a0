"""Which ledger key an auditor trusts (audit.py, points 1 and 2), as a CT monitor would.

* `check_anchor`: the log must be the node's the auditor named; its key must be the one
  given out of band (`--expect-key`, a key or its fingerprint) and/or certified for the
  log's node by the federation CA the auditor was given (`--ca`, anchor.py), valid at
  the head's time. Neither given: trust on first use, and the verdict says so.
* a key other than the pinned one is followed only through the log itself: rotation
  entries (`ledger_key_rotated`) whose handover the pinned key signed, chained to the
  presented key (`follow_rotation`); in a range check those entries are found by a scan
  and each is proved included (`scan_rotations`). The old keys a log names
  (`handed_over`) let an auditor accept archives signed before a rotation.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cryptography import x509

from protocols import merkle

from node.ledger import canonical
from node.ledger.anchor import ROTATED, CertificationError, fingerprint, rotation_from, verify_certification
from node.ledger.entries import AdminEntry, decode
from node.ledger.signing import LedgerPublicKey, SignatureError, SignedTreeHead
from node.ledger.sources import LogSource

__all__ = ["Trust", "check_anchor", "expected", "follow_rotation", "scan_rotations",
           "handed_over", "key_changed", "ROTATION_MARK"]

ROTATION_MARK = b'"' + ROTATED.encode() + b'"'  # cheap pre-filter before decoding an entry


@dataclass(frozen=True)
class Trust:
    """What anchors a node's key: the federation CA's certificates (`--ca`) and/or a key
    obtained out of band (`--expect-key`)."""

    roots: tuple[x509.Certificate, ...] = ()
    expect_key: LedgerPublicKey | str | None = None  # a key, or its "sha256:<hex>" fingerprint
    node: str | None = None  # the node whose log the auditor means to verify


def check_anchor(source: LogSource, key: LedgerPublicKey, head: SignedTreeHead, trust: Trust,
                 verdict: Any) -> None:
    """Point 1 of audit.py: the node the log must be, --expect-key, --ca."""
    anchored = False
    if trust.node is not None and head.node != trust.node:
        verdict.fail("wrong_node", "tree head", f"the log is {head.node!r}'s, not "
                     f"{trust.node!r}'s")
    if trust.expect_key is not None:
        if not expected(trust, key):
            shown = getattr(trust.expect_key, "text", trust.expect_key)
            verdict.fail("key_unexpected", "public key", f"the log is signed with {key.text} "
                         f"({fingerprint(key)}), but {shown} was expected (--expect-key)")
        anchored = True
    if trust.roots:
        get = getattr(source, "key_certification", None)
        try:
            statement = verify_certification(get() if get else None, trust.roots,
                                             node=head.node, key=key, at=head.time)
            verdict.notes.append(f"ledger key {fingerprint(key)} certified for {head.node} "
                                 f"by the given CA until {statement.not_after}")
        except CertificationError as exc:
            verdict.fail("key_not_certified", "public key", f"the ledger key {key.text} is not "
                         f"certified for node {head.node}: {exc}")
        anchored = True
    if not anchored:
        verdict.notes.append("the ledger key was checked against no CA and no expected key "
                             "(trust on first use): give --ca or --expect-key")


def expected(trust: Trust, key: LedgerPublicKey) -> bool:
    """Is `key` the one the auditor was told to expect (as a key or its fingerprint)?"""
    return trust.expect_key == key or trust.expect_key == fingerprint(key)


def handed_over(rotations: list[tuple[int, bytes]], node: str) -> list[LedgerPublicKey]:
    """The earlier keys of a log, from its rotation entries (archives may be signed so)."""
    keys = []
    for _, data in rotations:
        try:
            entry = decode(data)
            if isinstance(entry, AdminEntry) and entry.action == ROTATED:
                keys.append(rotation_from(entry.details, node)[0])
        except (canonical.CanonicalError, SignatureError):
            continue
    return keys


def key_changed(verdict: Any, key: LedgerPublicKey, pinned: LedgerPublicKey, why: str) -> None:
    verdict.fail("key_changed", "public key", f"the node now presents {key.text}, but "
                 f"{pinned.text} was pinned{why}; confirm a rotation out of band (--expect-key)",
                 at=0)


def follow_rotation(verdict: Any, rotations: list[tuple[int, bytes]], node: str,
                     pinned: LedgerPublicKey, key: LedgerPublicKey, head: SignedTreeHead) -> None:
    """Accept `key` only through ledgered rotations handed over from `pinned`."""
    current, steps = pinned, []
    for idx, data in rotations:
        try:
            entry = decode(data)
        except canonical.CanonicalError:
            continue  # the entries check names it
        if not isinstance(entry, AdminEntry) or entry.action != ROTATED:
            continue
        try:
            old, new = rotation_from(entry.details, node)
        except SignatureError:
            verdict.fail("key_changed", f"entry {idx}", "a key rotation whose handover the "
                         "old key did not sign")
            return
        if old == current:
            current = new
            steps.append(f"entry {idx}: {fingerprint(old)} -> {fingerprint(new)}")
    if current == key:
        verdict.notes.append("ledger key rotated, handed over by the pinned key: " + "; ".join(steps))
        return
    key_changed(verdict, key, pinned, " and the log records no rotation from it")
    try:
        head.verify(pinned)
    except SignatureError:
        verdict.fail("head_signature", f"tree size {head.size}",
                     "the signed tree head does not verify with the pinned key", at=1)


def scan_rotations(source: LogSource, head: SignedTreeHead, verdict: Any) -> list[tuple[int, bytes]]:
    """Rotation entries of the log under `head`, each checked by an inclusion proof."""
    found = []
    for idx, data in source.entries(0, head.size):
        if ROTATION_MARK in data:
            try:
                merkle.verify_inclusion(merkle.hash_leaf(data), idx, head.size,
                                        source.inclusion_proof(idx, head.size), head.root)
                found.append((idx, data))
            except merkle.ProofError:
                verdict.fail("inclusion", f"entry {idx}", "a key rotation entry that is not "
                             "included under the signed tree head")
    return found
