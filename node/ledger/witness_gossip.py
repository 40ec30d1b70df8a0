"""Witnesses compare notes: what each cosigned, exchanged over connections they already have.

A log that shows one history to witness A and another to witness B is caught only if A
and B compare what they saw. Every witnessing round the calling node sends, and the
called node answers with, an exchange document (the Ledger service's Exchange call):

    {"v": 1,
     "certification": {...},             # the sender's ledger-key certification (anchor.py)
     "for_you":   [cosignature, ...],    # the sender's cosignatures of the receiver's heads
     "cosigned":  [{"head", "cosignatures"}, ...],  # recent heads of third parties it cosigned
     "conflicts": [{"partner", "kind", "first", "second"}, ...]}   # open conflicts it holds

The receiver (`take`) keeps cosignatures of its own heads and the sender's certification
(so it can serve them, witness_pki.py), and
records a conflict with both signed heads when
- a head of a log it witnesses has the size of one it cosigned but another root (fork);
- with `prove` (it reaches the log), the log cannot prove the reported head consistent
  with the last one this node accepted (inconsistent);
- a head signed by its *own* key is not in its own ledger: it was rolled back or a copy of
  it runs elsewhere (rollback / fork of its own log);
- another witness forwards self-proving evidence (a fork, or a rollback) about a log
  whose key it has pinned.
Heads are only believed when they verify with the log's pinned key; the reporter's
cosignatures are kept as evidence when they verify with the reporter's pinned key.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable, Mapping

from sqlalchemy import select

from protocols import merkle

from node.ledger import canonical
from node.ledger.signing import Cosignature, LedgerPublicKey, SignatureError, SignedTreeHead, partner_key
from node.ledger.tables import witness_conflicts, witness_cosignatures
from node.ledger.witness import Witness, head_json

__all__ = ["exchange_document", "take", "Prover"]

PER_LOG = 8
# prove(log, first, second) -> consistency proof, or None when the log cannot be reached;
# raises LookupError when the log refuses to prove (it does not have such a tree).
Prover = Callable[[str, int, int], "list[bytes] | None"]


def exchange_document(witness: Witness, peer: str) -> dict[str, Any]:
    me = witness.ledger.node_id
    recent: dict[str, list[Cosignature]] = defaultdict(list)
    with witness.ledger.engine.connect() as conn:
        rows = conn.execute(select(witness_cosignatures.c.cosignature).where(
            witness_cosignatures.c.witness == me).order_by(witness_cosignatures.c.id.desc()))
        for text in rows.scalars():
            c = Cosignature.from_dict(canonical.parse(text.encode()))
            if len(recent[c.head.node]) < PER_LOG:
                recent[c.head.node].append(c)
    from node.ledger.anchor import current_certification
    own = current_certification(witness.ledger.engine, witness.ledger.public_key)
    return {"v": 1,
            **({"certification": own.to_dict()} if own is not None else {}),
            "for_you": [c.to_dict() for c in recent.pop(peer, [])],
            "cosigned": [{"head": c.head.to_dict(), "cosignatures": [c.to_dict()]}
                         for log in sorted(recent) for c in recent[log]],
            "conflicts": [{"partner": c.partner, "kind": c.kind, "first": c.first.to_dict(),
                           "second": c.second.to_dict()} for c in witness.open_conflicts()]}


def _key(witness: Witness, node: str) -> LedgerPublicKey | None:
    if node == witness.ledger.node_id:
        return witness.ledger.public_key
    return partner_key(witness.ledger.engine, node)


def _signed_by(head: SignedTreeHead, key: LedgerPublicKey | None) -> bool:
    if key is None:
        return False
    try:
        head.verify(key)
        return True
    except SignatureError:
        return False


def take(witness: Witness, reporter: str, doc: Mapping[str, Any], prove: Prover | None = None) -> list[str]:
    """Check a peer's exchange document; returns the kinds of conflicts newly recorded."""
    if not isinstance(doc, Mapping) or doc.get("v") != 1:
        raise canonical.CanonicalError("not a witness exchange document")
    recorded: list[str] = []
    reporter_key = partner_key(witness.ledger.engine, reporter)
    _keep_reporter_certification(witness, reporter, reporter_key, doc.get("certification"))
    for d in doc.get("for_you", []):
        c = Cosignature.from_dict(d)
        if c.witness != reporter or not _signed_by(c.head, witness.ledger.public_key):
            continue
        if _own_head(witness, c.head, reporter, recorded) and reporter_key is not None:
            try:
                c.verify(reporter_key)
                witness.keep_cosignature(c)
            except SignatureError:
                pass
    latest: dict[str, SignedTreeHead] = {}
    for item in doc.get("cosigned", []):
        head = SignedTreeHead.from_dict(item["head"])
        if head.node == reporter or not _signed_by(head, _key(witness, head.node)):
            continue
        if head.node == witness.ledger.node_id:
            _own_head(witness, head, reporter, recorded)
            continue
        _keep_reported(witness, item.get("cosignatures", []), head, reporter, reporter_key)
        with witness.ledger.engine.begin() as conn:
            for mine in witness.heads_at(conn, head.node, head.size):
                if mine.root != head.root and witness.record_conflict(
                        conn, head.node, "fork", mine, head, f"cosigned by {reporter}"):
                    recorded.append("fork")
                    break
        if head.size > latest.get(head.node, head).size or head.node not in latest:
            latest[head.node] = head
    if prove is not None:
        for head in latest.values():
            _prove_against_own(witness, head, reporter, prove, recorded)
    for c in doc.get("conflicts", []):
        _forwarded(witness, c, reporter, recorded)
    return recorded


def _keep_reporter_certification(witness: Witness, reporter: str, key: LedgerPublicKey | None,
                                 d: Any) -> None:
    """The reporter's key certification, kept to serve with its cosignatures (witness_pki.py)."""
    from node.ledger.anchor import CertificationError, KeyCertification
    from node.ledger.witness_pki import keep_certification
    if d is None or key is None:
        return
    try:
        keep_certification(witness.ledger.engine, reporter, key, KeyCertification.from_dict(d),
                           now=witness.ledger.clock())
    except CertificationError:
        pass  # a malformed certification is not served; its cosignatures count only by --witness-key


def _own_head(witness: Witness, head: SignedTreeHead, reporter: str, recorded: list[str]) -> bool:
    """A head signed with this node's key: is it in this node's ledger? Records if not."""
    ledger = witness.ledger
    size = ledger.size()
    if head.size <= size and (head.size == 0 or ledger.root(head.size) == head.root):
        return True
    kind = "rollback" if head.size > size else "fork"
    current = ledger.sign_head()
    with ledger.engine.begin() as conn:
        known = conn.execute(select(witness_conflicts.c.id).where(
            witness_conflicts.c.partner == ledger.node_id,
            witness_conflicts.c.first_head == head_json(head))).first()
        if known is None and witness.record_conflict(conn, ledger.node_id, kind, head, current,
                                   f"this node's own ledger, shown by {reporter}"):
            recorded.append(kind)
    return False


def _keep_reported(witness: Witness, cosignatures: list, head: SignedTreeHead, reporter: str,
                   reporter_key: LedgerPublicKey | None) -> None:
    for d in cosignatures:
        c = Cosignature.from_dict(d)
        if c.witness == reporter and c.head == head and reporter_key is not None:
            try:
                c.verify(reporter_key)
                witness.keep_cosignature(c)
            except SignatureError:
                pass


def _prove_against_own(witness: Witness, head: SignedTreeHead, reporter: str, prove: Prover,
                       recorded: list[str]) -> None:
    with witness.ledger.engine.connect() as conn:
        last = witness.last_seen(conn, head.node)
    if last is None or last.size == head.size or min(last.size, head.size) == 0:
        return
    first, second = (last, head) if last.size < head.size else (head, last)
    try:
        proof = prove(head.node, first.size, second.size)
        if proof is None:
            return  # unreachable now; the next round tries again
        merkle.verify_consistency(first.size, second.size, first.root, second.root, proof)
    except (LookupError, merkle.ProofError):
        with witness.ledger.engine.begin() as conn:
            if witness.record_conflict(conn, head.node, "inconsistent", first, second,
                                       f"cosigned by {reporter}; the log proves no consistency"):
                recorded.append("inconsistent")


def _forwarded(witness: Witness, c: Mapping[str, Any], reporter: str, recorded: list[str]) -> None:
    first, second = SignedTreeHead.from_dict(c["first"]), SignedTreeHead.from_dict(c["second"])
    log, kind = c["partner"], c["kind"]
    key = _key(witness, log)
    if first.node != log or second.node != log or not (_signed_by(first, key) and _signed_by(second, key)):
        return
    # Head times have one-second resolution: an honest log signs heads of several sizes
    # within one second, so only a smaller head signed in a strictly later second proves
    # a rollback on a third party's word.
    proven = (kind == "fork" and first.size == second.size and first.root != second.root) or \
             (kind == "rollback" and second.size < first.size and second.time > first.time)
    if not proven:
        return  # only self-proving evidence is taken on another witness's word
    with witness.ledger.engine.begin() as conn:
        pair = {head_json(first), head_json(second)}
        seen = any({r.first_head, r.second_head} == pair for r in conn.execute(
            select(witness_conflicts.c.first_head, witness_conflicts.c.second_head).where(
                witness_conflicts.c.partner == log)))  # on record, open or resolved here
        if not seen and witness.record_conflict(conn, log, kind, first, second,
                                                    f"evidence forwarded by {reporter}"):
            recorded.append(kind)
