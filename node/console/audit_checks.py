"""What the auditor pages verify, in-process, the way an external auditor would.

Nothing here trusts the node's own word for a result: a head's signature is checked
against the ledger key, and that key against its certification in the federation PKI
(anchor.verify_certification, with the node's CA file); an entry's leaf hash is computed
from its stored bytes, folded with the proof the ledger serves (protocols/merkle, the
verifier `shuqiao audit verify` runs) and compared with the signed root; a consistency
proof is checked against both roots. Each check returns a verdict with a plain reason,
never raises for a bad proof or an unknown size: the pages show the failure.

Cross-check status per partner reads what witnessing already keeps (node/ledger/witness.py):
the last head of this node's ledger the partner cosigned (and whether that cosignature
verifies with the partner's pinned key), the last head of the partner's ledger this node
checked, and open conflicts (alarms).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone

from sqlalchemy import func, select

from protocols import merkle

from node.ledger import canonical
from node.ledger.anchor import CertificationError, current_certification, fingerprint, load_roots, \
    verify_certification
from node.ledger.log import LedgerError
from node.ledger.signing import Cosignature, SignatureError, SignedTreeHead, partner_key
from node.ledger.tables import witness_cosignatures, witness_heads
from node.runtime.context import NodeContext

__all__ = ["HeadCheck", "ProofCheck", "PartnerWitnessing", "check_head", "check_inclusion",
           "check_consistency", "check_given_inclusion", "parse_hashes", "witnessing_status",
           "own_open_conflicts"]


@dataclass
class HeadCheck:
    head: SignedTreeHead
    key: str  # the ledger key's fingerprint
    signature_ok: bool
    certification_ok: bool
    certification: str  # until when it is certified, or why it is not
    source: str = "signed"  # signed | seen (remembered by the browser) | computed (no signature)


@dataclass
class ProofCheck:
    ok: bool
    problem: str = ""  # why the check failed, in the verifier's words (technical, English)
    kind: str = ""  # mismatch | shape | range: what the pages say in the reader's language
    proof: list[bytes] = field(default_factory=list)
    leaf: bytes | None = None
    computed_root: bytes | None = None
    expected_root: bytes | None = None


def check_head(ctx: NodeContext, head: SignedTreeHead) -> HeadCheck:
    """Verify `head`'s signature with the ledger key, and that key's certification at the head's time."""
    ledger = ctx.ledger
    key = ledger.public_key
    try:
        head.verify(key)
        signed = True
    except SignatureError:
        signed = False
    try:
        roots = load_roots(ctx.config.path(ctx.config.tls.ca))
        statement = verify_certification(current_certification(ledger.engine, key), roots,
                                         node=head.node, key=key, at=head.time)
        certified, why = True, statement.not_after
    except CertificationError as exc:
        certified, why = False, str(exc)
    return HeadCheck(head, fingerprint(key), signed, certified, why)


def _fail(exc: Exception, **known) -> ProofCheck:
    if isinstance(exc, merkle.RootMismatchError):
        return ProofCheck(False, f"the proof leads to a different root than expected ({exc})", "mismatch", **known)
    if isinstance(exc, merkle.ProofShapeError):
        return ProofCheck(False, f"the proof is malformed ({exc})", "shape", **known)
    return ProofCheck(False, str(exc), "range", **known)


def check_inclusion(ctx: NodeContext, index: int, data: bytes, head: SignedTreeHead) -> ProofCheck:
    """Is the entry with bytes `data` leaf `index` under `head`'s root?"""
    leaf = merkle.hash_leaf(data)
    try:
        proof = ctx.ledger.inclusion_proof(index, head.size)
    except (LedgerError, merkle.ProofError) as exc:
        return _fail(exc, leaf=leaf, expected_root=head.root)
    return check_given_inclusion(leaf, index, head.size, proof, head.root)


def check_given_inclusion(leaf: bytes, index: int, size: int, proof: list[bytes], root: bytes) -> ProofCheck:
    """The verifier alone, on values handed in (the page where an auditor pastes a proof)."""
    known = {"proof": proof, "leaf": leaf, "expected_root": root}
    try:
        computed = merkle.root_from_inclusion_proof(leaf, index, size, proof)
    except merkle.ProofError as exc:
        return _fail(exc, **known)
    try:
        merkle.verify_inclusion(leaf, index, size, proof, root)
    except merkle.ProofError as exc:
        return _fail(exc, computed_root=computed, **known)
    return ProofCheck(True, computed_root=computed, **known)


def check_consistency(ctx: NodeContext, first: SignedTreeHead | tuple[int, bytes],
                      second: SignedTreeHead | tuple[int, bytes]) -> ProofCheck:
    """Does the tree (size2, root2) extend (size1, root1)? Proof from the ledger, checked here."""
    size1, root1 = (first.size, first.root) if isinstance(first, SignedTreeHead) else first
    size2, root2 = (second.size, second.root) if isinstance(second, SignedTreeHead) else second
    try:
        proof = [] if size1 == size2 else ctx.ledger.consistency_proof(size1, size2)
        merkle.verify_consistency(size1, size2, root1, root2, proof)
    except (LedgerError, merkle.ProofError) as exc:
        return _fail(exc, expected_root=root2)
    return ProofCheck(True, proof=proof, expected_root=root2)


def parse_hashes(text: str) -> list[bytes]:
    """Hex hashes separated by spaces, commas or new lines (a pasted proof).

    Raises:
        ValueError: something that is not 64 hex digits.
    """
    out = []
    for n, word in enumerate(text.replace(",", " ").split(), 1):
        try:
            value = bytes.fromhex(word)
        except ValueError:
            raise ValueError(f"item {n} is not hexadecimal") from None
        if len(value) != merkle.HASH_SIZE:
            raise ValueError(f"item {n} is {len(value)} bytes, a SHA-256 hash is {merkle.HASH_SIZE}")
        out.append(value)
    return out


# -- witnessing, per partner ---------------------------------------------------------------

@dataclass
class PartnerWitnessing:
    partner: str
    name: str
    cosigned_size: int | None = None  # the last head of this node's ledger the partner cosigned
    cosigned_time: str | None = None
    cosigned_age: float | None = None  # seconds
    cosignature_ok: bool | None = None  # None: no pinned key to check it with
    lag: int = 0  # this node's entries not yet under a head the partner cosigned (as /metrics)
    seen_size: int | None = None  # the last head of the partner's ledger this node checked
    seen_time: str | None = None
    seen_age: float | None = None
    open_conflicts: list = field(default_factory=list)
    conflicts: int = 0
    alarms: list[str] = field(default_factory=list)  # word keys: what needs attention


def _age(now: datetime, moment: datetime | str | None) -> float | None:
    if moment is None:
        return None
    if isinstance(moment, str):
        moment = canonical.parse_time(moment)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return max(0.0, (now - moment).total_seconds())


def witnessing_status(ctx: NodeContext) -> list[PartnerWitnessing]:
    """One row per configured partner: cosignatures both ways, lag, conflicts and alarms."""
    from node.ledger.witness import Witness
    ledger, me = ctx.ledger, ctx.config.node.id
    now = ctx.clock.now()
    stale = 3 * ctx.config.maintenance.witness_seconds  # three rounds missed
    witness = Witness(ledger)
    c, h = witness_cosignatures.c, witness_heads.c
    out = []
    with ledger.engine.connect() as conn:
        size = ledger.size(conn)
        for p in ctx.config.partners:
            row = PartnerWitnessing(p.id, p.display_name or p.id)
            text = conn.execute(select(c.cosignature).where(c.log_node == me, c.witness == p.id)
                                .order_by(c.size.desc(), c.id.desc()).limit(1)).scalar()
            if text is not None:
                cosignature = Cosignature.from_dict(canonical.parse(text.encode()))
                row.cosigned_size, row.cosigned_time = cosignature.head.size, cosignature.time
                row.cosigned_age = _age(now, cosignature.time)
                key = partner_key(conn, p.id)
                if key is not None:
                    try:
                        cosignature.verify(key)
                        row.cosignature_ok = True
                    except SignatureError:
                        row.cosignature_ok = False
            row.lag = max(0, size - (row.cosigned_size or 0))
            seen = witness.last_seen(conn, p.id)
            if seen is not None:
                row.seen_size, row.seen_time = seen.size, seen.time
                row.seen_age = _age(now, conn.execute(select(func.max(h.seen_at)).where(
                    h.partner == p.id)).scalar())
            out.append(row)
    conflicts = witness.all_conflicts()
    for row in out:
        mine = [k for k in conflicts if k.partner == row.partner]
        row.conflicts, row.open_conflicts = len(mine), [k for k in mine if k.open]
        if row.open_conflicts:
            row.alarms.append("alarm.conflict")
        if row.cosignature_ok is False:
            row.alarms.append("alarm.bad_cosignature")
        if row.cosigned_size is None:
            row.alarms.append("alarm.never_cosigned")
        elif row.cosigned_age is not None and row.cosigned_age > stale and row.lag:
            row.alarms.append("alarm.stale")
        if row.seen_size is None:
            row.alarms.append("alarm.never_seen")
    return out


def own_open_conflicts(ctx: NodeContext) -> list:
    """Open conflicts about this node's own ledger, learned from partners' cosignatures."""
    from node.ledger.witness import Witness
    return Witness(ctx.ledger).open_conflicts(ctx.config.node.id)
