"""Witnessing: partners check and countersign each other's tree heads.

A node could show one history to one auditor and another to the next (a split view).
Partners close that gap: each obtains a partner's signed tree head -- pushed by the
partner (the Cosign call) or pulled from it (node/server/witnessing.py), whichever side knows
the address -- checks it against the last head of that partner it accepted -- never
smaller (rollback), the same root at the same size (fork), and a valid consistency
proof from the old size -- and then countersigns it. Auditors who see cosigned heads
know every witness saw the same history.

Round (`Witness.observe`, served by the Ledger gRPC service's Cosign call):
  log owner -> witness   signed head, public key, [consistency proof from size m]
  witness -> log owner   cosignature, or "send a proof from size m", or the conflict
A conflict keeps both signed heads as evidence (witness_conflicts and a "witness"
ledger entry), raises an alarm (alarms.py), and is recorded once per contradicted head
while it stays open; two heads signed by the same key that cannot both be honest are
proof enough for anyone. The partner's key is pinned on first use (signing.pin_partner_key,
shared with receipt checking); a different key is refused, not cosigned.

What reaches the witness's own ledger: the first head of a partner it cosigns, every
conflict, every resolution, and a changed head at most once per `ledger_every` seconds.
Two witnesses that ledger each other's every change would never stop (each entry changes
the head the other one witnesses); the cosignatures themselves are all kept and served.

A conflict stays open until an operator who has established the true history resolves
it (`resolve`, `shuqiao witness resolve`): the chosen head becomes the new baseline the
witness checks against, the resolution is ledgered, and the evidence stays.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Sequence

from sqlalchemy import Connection, func, insert, select

from protocols import merkle

from node.core.errors import Refusal
from node.ledger import canonical
from node.ledger.alarms import raise_alarm
from node.ledger.entries import WitnessEntry
from node.ledger.log import Ledger
from node.ledger.signing import (Cosignature,
    KeyChanged,
    LedgerPublicKey,
    SignatureError,
    SignedTreeHead,
    pin_partner_key)
from node.ledger.tables import (ledger_entries,
    witness_conflicts,
    witness_cosignatures,
    witness_heads,
    witness_resolutions)

__all__ = ["Witness", "Observation", "WitnessError", "Conflict", "LEDGER_EVERY"]

LEDGER_EVERY = 3600.0
DETAILS = {"rollback": "the log shrank", "fork": "same size, different root",
           "inconsistent": "the new head does not extend the old one"}


class WitnessError(Refusal):
    """A head this witness will not judge: bad signature, another node's head, a changed key.

    A refusal: the message is written for the partner that presented the head.
    """


@dataclass(frozen=True)
class Observation:
    verdict: str  # cosigned | need_proof | stale | fork | rollback | inconsistent
    cosignature: Cosignature | None = None
    need_proof_from: int | None = None
    conflicting_head: SignedTreeHead | None = None


@dataclass(frozen=True)
class Conflict:
    id: int
    partner: str
    kind: str
    first: SignedTreeHead
    second: SignedTreeHead
    detail: str
    detected_at: datetime
    open: bool


def head_json(head: SignedTreeHead) -> str:
    return canonical.dump(head.to_dict()).decode()


def parse_head(text: str) -> SignedTreeHead:
    return SignedTreeHead.from_dict(canonical.parse(text.encode()))


def _head_row(row) -> SignedTreeHead:
    return SignedTreeHead(row.partner, row.size, row.root, row.time, row.signature)


class Witness:
    """This node as a witness of its partners' ledgers; records go into its own ledger."""

    def __init__(self, ledger: Ledger, *, ledger_every: float = LEDGER_EVERY) -> None:
        self.ledger = ledger
        self.ledger_every = ledger_every

    # -- state --------------------------------------------------------------------------

    def _resolution(self, conn: Connection, partner: str):
        return conn.execute(select(witness_resolutions).where(witness_resolutions.c.partner == partner)
                            .order_by(witness_resolutions.c.id.desc()).limit(1)).first()

    def last_seen(self, conn: Connection, partner: str) -> SignedTreeHead | None:
        """The head everything new must extend: the largest accepted since the last resolution."""
        resolved = self._resolution(conn, partner)
        query = select(witness_heads).where(witness_heads.c.partner == partner)
        if resolved is not None:
            query = query.where(witness_heads.c.id >= resolved.head_row)
        row = conn.execute(query.order_by(witness_heads.c.size.desc(), witness_heads.c.id.desc())
                           .limit(1)).first()
        return None if row is None else _head_row(row)

    def heads_at(self, conn: Connection, partner: str, size: int) -> list[SignedTreeHead]:
        """Every head of `partner` at `size` this node accepted since the last resolution."""
        query = select(witness_heads).where(witness_heads.c.partner == partner,
                                            witness_heads.c.size == size)
        resolved = self._resolution(conn, partner)
        if resolved is not None:  # heads before it may be of the history ruled false
            query = query.where(witness_heads.c.id >= resolved.head_row)
        return [_head_row(r) for r in conn.execute(query)]

    def _my_cosignature(self, conn: Connection, head: SignedTreeHead) -> Cosignature | None:
        rows = conn.execute(select(witness_cosignatures.c.cosignature).where(
            witness_cosignatures.c.log_node == head.node, witness_cosignatures.c.size == head.size,
            witness_cosignatures.c.witness == self.ledger.node_id)
            .order_by(witness_cosignatures.c.id.desc())).scalars()
        for text in rows:
            c = Cosignature.from_dict(canonical.parse(text.encode()))
            if c.head == head:
                return c
        return None

    # -- judging ------------------------------------------------------------------------

    def observe(self, partner: str, key: LedgerPublicKey, head: SignedTreeHead,
                proof_from: int | None = None, proof: Sequence[bytes] = ()) -> Observation:
        """Judge `partner`'s `head`; cosign it if it extends everything seen before.

        Raises:
            WitnessError: the head is not the partner's, its signature fails, or the
                partner presents another key than the one pinned.
        """
        if head.node != partner:
            raise WitnessError("the head names another node than the caller")
        try:
            head.verify(key)
            pin_partner_key(self.ledger.engine, partner, key, now=self.ledger.clock())
        except KeyChanged:
            raise WitnessError("the partner presents another ledger key than the one "
                               "pinned; a rotation must be confirmed out of band") from None
        except SignatureError:
            raise WitnessError("the head's signature does not verify") from None
        with self.ledger.engine.begin() as conn:
            previous = self.last_seen(conn, partner)
            if previous == head:
                done = self._my_cosignature(conn, head)
                if done is not None:  # the same head again: nothing new to record
                    return Observation("cosigned", cosignature=done)
            conflict = self._judge(previous, head, proof_from, proof)
            if conflict == "need_proof":
                return Observation("need_proof", need_proof_from=previous.size)
            if conflict == "stale":  # neither cosigned nor an alarm; the next round retries
                return Observation("stale", conflicting_head=previous)
            now = self.ledger.now()
            if conflict is not None:
                self.record_conflict(conn, partner, conflict, previous, head, "seen directly")
                return Observation(conflict, conflicting_head=previous)
            cosignature = self.ledger.signer.cosign(head, now)
            stamp = self.ledger.clock()
            conn.execute(insert(witness_heads).values(
                partner=partner, public_key=key.text, size=head.size, root=head.root,
                time=head.time, signature=head.signature, seen_at=stamp))
            conn.execute(insert(witness_cosignatures).values(
                log_node=partner, witness=self.ledger.node_id, size=head.size,
                cosignature=canonical.dump(cosignature.to_dict()).decode(), created_at=stamp))
            if self._ledger_due(conn, partner, previous, head):
                self.ledger.append(conn, WitnessEntry(partner, "cosigned", head, now))
            return Observation("cosigned", cosignature=cosignature)

    @staticmethod
    def _judge(previous: SignedTreeHead | None, head: SignedTreeHead, proof_from: int | None,
               proof: Sequence[bytes]) -> str | None:
        if previous is None:
            return None  # trust on first use
        if head.size < previous.size:
            # Head times have one-second resolution: a smaller head signed no later than
            # the one already seen is a push overtaken by a pull, not a rollback.
            return "rollback" if head.time > previous.time else "stale"
        if head.size == previous.size:
            return None if head.root == previous.root else "fork"
        if previous.size == 0:
            return None  # every tree extends the empty one
        if proof_from != previous.size:
            return "need_proof"
        try:
            merkle.verify_consistency(previous.size, head.size, previous.root, head.root, proof)
        except merkle.ProofError:
            return "inconsistent"
        return None

    def _ledger_due(self, conn: Connection, partner: str, previous: SignedTreeHead | None,
                    head: SignedTreeHead) -> bool:
        if previous is None:
            return True
        if (previous.size, previous.root) == (head.size, head.root):
            return False  # re-signed, not changed
        last = conn.execute(select(func.max(ledger_entries.c.created_at)).where(
            ledger_entries.c.type == "witness", ledger_entries.c.partner == partner,
            ledger_entries.c.outcome == "cosigned")).scalar()
        if last is None:
            return True
        if last.tzinfo is None:
            last = last.replace(tzinfo=timezone.utc)
        return self.ledger.clock() - last >= timedelta(seconds=self.ledger_every)

    def record_conflict(self, conn: Connection, partner: str, kind: str, first: SignedTreeHead,
                        second: SignedTreeHead, source: str) -> bool:
        """Keep both heads, ledger the conflict, raise the alarm; False if already open."""
        resolved = self._resolution(conn, partner)
        query = select(witness_conflicts.c.first_head).where(
            witness_conflicts.c.partner == partner, witness_conflicts.c.kind == kind)
        if resolved is not None:
            query = query.where(witness_conflicts.c.id > resolved.resolved_through)
        if head_json(first) in set(conn.execute(query).scalars()):
            return False  # the same contradicted head, already on record and open
        conn.execute(insert(witness_conflicts).values(
            partner=partner, kind=kind, first_head=head_json(first), second_head=head_json(second),
            detail=f"{DETAILS[kind]} ({source})", detected_at=self.ledger.clock()))
        self._ledger_record(conn, partner, kind, second, first)
        raise_alarm(partner, kind, first.size, second.size, source)
        return True

    # -- conflicts and their resolution -------------------------------------------------

    def all_conflicts(self, partner: str | None = None) -> list[Conflict]:
        with self.ledger.engine.connect() as conn:
            closed: dict[str, int] = {}
            for r in conn.execute(select(witness_resolutions).order_by(witness_resolutions.c.id)):
                closed[r.partner] = r.resolved_through
            query = select(witness_conflicts).order_by(witness_conflicts.c.id)
            if partner is not None:
                query = query.where(witness_conflicts.c.partner == partner)
            return [Conflict(r.id, r.partner, r.kind, parse_head(r.first_head),
                             parse_head(r.second_head), r.detail, r.detected_at,
                             r.id > closed.get(r.partner, 0)) for r in conn.execute(query)]

    def conflicts(self, partner: str | None = None) -> list[tuple[str, SignedTreeHead, SignedTreeHead]]:
        """(kind, earlier head, later head) for every conflict recorded."""
        return [(c.kind, c.first, c.second) for c in self.all_conflicts(partner)]

    def open_conflicts(self, partner: str | None = None) -> list[Conflict]:
        return [c for c in self.all_conflicts(partner) if c.open]

    def resolve(self, partner: str, root: bytes, actor: str) -> SignedTreeHead:
        """Close `partner`'s conflicts; witnessing resumes from its head with `root`.

        The head must be one this node holds, signed by the partner's key: accepted
        before, or kept as conflict evidence. Raises WitnessError if there is none.
        """
        from node.ledger.signing import partner_key
        key = self.ledger.public_key if partner == self.ledger.node_id else \
            partner_key(self.ledger.engine, partner)
        with self.ledger.engine.begin() as conn:
            candidates = [h for h in self._known_heads(conn, partner) if h.root == root]
            if key is None or not candidates:
                raise WitnessError(f"no signed head of {partner} with that root is on record")
            head = max(candidates, key=lambda h: (h.size, h.time))
            head.verify(key)
            row = conn.execute(insert(witness_heads).values(
                partner=partner, public_key=key.text, size=head.size, root=head.root,
                time=head.time, signature=head.signature, seen_at=self.ledger.clock()))
            through = conn.execute(select(func.max(witness_conflicts.c.id)).where(
                witness_conflicts.c.partner == partner)).scalar() or 0
            conn.execute(insert(witness_resolutions).values(
                partner=partner, head=head_json(head), head_row=row.inserted_primary_key[0],
                resolved_through=through, actor=actor[:64], resolved_at=self.ledger.clock()))
            self._ledger_record(conn, partner, "resolved", head, None)
        return head

    def _ledger_record(self, conn: Connection, partner: str, verdict: str, head: SignedTreeHead,
                       earlier: SignedTreeHead | None) -> None:
        if partner != self.ledger.node_id:
            self.ledger.append(conn, WitnessEntry(partner, verdict, head, self.ledger.now(),
                                                  conflicting_head=earlier))
            return
        # A node does not witness its own log; what it learned about it is an admin record.
        from node.ledger.entries import AdminEntry
        details = {"kind": verdict, "size": head.size, "root": head.root.hex()}
        if earlier is not None:
            details.update(earlier_size=earlier.size, earlier_root=earlier.root.hex())
        self.ledger.append(conn, AdminEntry("own_ledger_resolved" if verdict == "resolved"
                                            else "own_ledger_conflict", "ledger", "witness",
                                            self.ledger.now(), details))

    def _known_heads(self, conn: Connection, partner: str) -> list[SignedTreeHead]:
        heads = [_head_row(r) for r in conn.execute(
            select(witness_heads).where(witness_heads.c.partner == partner))]
        for r in conn.execute(select(witness_conflicts).where(witness_conflicts.c.partner == partner)):
            heads += [parse_head(r.first_head), parse_head(r.second_head)]
        if partner == self.ledger.node_id:
            heads += self.ledger.heads(conn)  # its own log: every head it signed
        return heads

    def resolutions(self) -> list[dict]:
        with self.ledger.engine.connect() as conn:
            return [{"partner": r.partner, "head": canonical.parse(r.head.encode()),
                     "resolved_through": r.resolved_through}
                    for r in conn.execute(select(witness_resolutions).order_by(witness_resolutions.c.id))]

    # -- cosignatures -------------------------------------------------------------------

    def store_cosignature(self, cosignature: Cosignature, witness_key: LedgerPublicKey) -> None:
        """Keep a partner's cosignature of one of this node's own heads (after checking it)."""
        if cosignature.head.node != self.ledger.node_id:
            raise WitnessError("the cosignature is over another node's head")
        try:
            cosignature.verify(witness_key)
            cosignature.head.verify(self.ledger.public_key)
        except SignatureError:
            raise WitnessError("the cosignature or the head it covers does not verify") from None
        self.keep_cosignature(cosignature)

    def keep_cosignature(self, cosignature: Cosignature) -> bool:
        """Store a checked cosignature unless this witness's cosignature of the same head
        is already on record (at whatever time: a partner could mint one per second, and
        these tables are append-only)."""
        text = canonical.dump(cosignature.to_dict()).decode()
        with self.ledger.engine.begin() as conn:
            if any(c.witness == cosignature.witness and c.head == cosignature.head
                   for c in (Cosignature.from_dict(canonical.parse(t.encode())) for t in conn.execute(
                       select(witness_cosignatures.c.cosignature).where(
                           witness_cosignatures.c.log_node == cosignature.head.node,
                           witness_cosignatures.c.witness == cosignature.witness,
                           witness_cosignatures.c.size == cosignature.head.size)).scalars())):
                return False
            conn.execute(insert(witness_cosignatures).values(
                log_node=cosignature.head.node, witness=cosignature.witness,
                size=cosignature.head.size, cosignature=text, created_at=self.ledger.clock()))
        return True

    def cosignatures(self, log_node: str | None = None) -> list[Cosignature]:
        query = select(witness_cosignatures.c.cosignature).order_by(witness_cosignatures.c.id)
        query = query.where(witness_cosignatures.c.log_node == (log_node or self.ledger.node_id))
        with self.ledger.engine.connect() as conn:
            return [Cosignature.from_dict(canonical.parse(t.encode())) for t in conn.execute(query).scalars()]

    def cosignatures_of(self, head: SignedTreeHead) -> list[Cosignature]:
        """Every cosignature on record of exactly `head`, one per witness."""
        query = select(witness_cosignatures.c.cosignature).where(
            witness_cosignatures.c.log_node == head.node, witness_cosignatures.c.size == head.size
        ).order_by(witness_cosignatures.c.id)
        found: dict[str, Cosignature] = {}
        with self.ledger.engine.connect() as conn:
            for text in conn.execute(query).scalars():
                c = Cosignature.from_dict(canonical.parse(text.encode()))
                if c.head == head:
                    found.setdefault(c.witness, c)
        return list(found.values())
