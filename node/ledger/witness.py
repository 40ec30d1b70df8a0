"""Witnessing: partners check and countersign each other's tree heads.

A node could show one history to one auditor and another to the next (a split view).
Partners close that gap: each periodically obtains a partner's signed tree head, checks
it against the last head of that partner it accepted -- never smaller (rollback), the
same root at the same size (fork), and a valid consistency proof from the old size --
and then countersigns it. Auditors who see cosigned heads know every witness saw the
same history.

Round (`Witness.observe`, served by the Ledger gRPC service's Cosign call):
  log owner -> witness   signed head, public key, [consistency proof from size m]
  witness -> log owner   cosignature, or "send a proof from size m", or the conflict
A conflict keeps both signed heads as evidence (witness_conflicts and a "witness"
ledger entry); two heads signed by the same key that cannot both be honest are proof
enough for anyone. The partner's key is pinned on first use (signing.pin_partner_key,
shared with receipt checking); a different key is refused, not cosigned.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Sequence

from sqlalchemy import Connection, insert, select

from protocols import merkle

from . import canonical
from .entries import WitnessEntry
from .log import Ledger
from .signing import (Cosignature, KeyChanged, LedgerPublicKey, SignatureError, SignedTreeHead,
                      pin_partner_key)
from .tables import witness_conflicts, witness_cosignatures, witness_heads

__all__ = ["Witness", "Observation", "WitnessError"]


class WitnessError(Exception):
    """A head that cannot be judged: bad signature, another node's head, a changed key."""


@dataclass(frozen=True)
class Observation:
    verdict: str  # cosigned | need_proof | fork | rollback | inconsistent
    cosignature: Cosignature | None = None
    need_proof_from: int | None = None
    conflicting_head: SignedTreeHead | None = None


def _head_json(head: SignedTreeHead) -> str:
    return canonical.dump(head.to_dict()).decode()


class Witness:
    """This node as a witness of its partners' ledgers; records go into its own ledger."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger

    def last_seen(self, conn: Connection, partner: str) -> SignedTreeHead | None:
        row = conn.execute(select(witness_heads).where(witness_heads.c.partner == partner)
                           .order_by(witness_heads.c.size.desc(), witness_heads.c.id.desc())
                           .limit(1)).first()
        return None if row is None else SignedTreeHead(partner, row.size, row.root, row.time,
                                                       row.signature)

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
            pin_partner_key(self.ledger.engine, partner, key)
        except KeyChanged:
            raise WitnessError("the partner presents another ledger key than the one "
                               "pinned; a rotation must be confirmed out of band") from None
        except SignatureError:
            raise WitnessError("the head's signature does not verify") from None
        with self.ledger.engine.begin() as conn:
            previous = self.last_seen(conn, partner)
            conflict = self._judge(previous, head, proof_from, proof)
            if conflict == "need_proof":
                return Observation("need_proof", need_proof_from=previous.size)
            now = self.ledger.now()
            if conflict is not None:
                self._record_conflict(conn, partner, conflict, previous, head, now)
                return Observation(conflict, conflicting_head=previous)
            cosignature = self.ledger.signer.cosign(head, now)
            stamp = datetime.now(timezone.utc)
            conn.execute(insert(witness_heads).values(
                partner=partner, public_key=key.text, size=head.size, root=head.root,
                time=head.time, signature=head.signature, seen_at=stamp))
            conn.execute(insert(witness_cosignatures).values(
                log_node=partner, witness=self.ledger.node_id, size=head.size,
                cosignature=canonical.dump(cosignature.to_dict()).decode(), created_at=stamp))
            self.ledger.append(conn, WitnessEntry(partner, "cosigned", head, now))
            return Observation("cosigned", cosignature=cosignature)

    @staticmethod
    def _judge(previous: SignedTreeHead | None, head: SignedTreeHead, proof_from: int | None,
               proof: Sequence[bytes]) -> str | None:
        if previous is None:
            return None  # trust on first use
        if head.size < previous.size:
            return "rollback"
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

    def _record_conflict(self, conn: Connection, partner: str, kind: str,
                         previous: SignedTreeHead, head: SignedTreeHead, now: str) -> None:
        detail = {"rollback": "the log shrank", "fork": "same size, different root",
                  "inconsistent": "the new head does not extend the old one"}[kind]
        conn.execute(insert(witness_conflicts).values(
            partner=partner, kind=kind, first_head=_head_json(previous),
            second_head=_head_json(head), detail=detail, detected_at=datetime.now(timezone.utc)))
        self.ledger.append(conn, WitnessEntry(partner, kind, head, now, conflicting_head=previous))

    def conflicts(self, partner: str | None = None) -> list[tuple[str, SignedTreeHead, SignedTreeHead]]:
        """(kind, earlier head, later head) for every conflict recorded."""
        query = select(witness_conflicts).order_by(witness_conflicts.c.id)
        if partner is not None:
            query = query.where(witness_conflicts.c.partner == partner)
        with self.ledger.engine.connect() as conn:
            return [(r.kind, SignedTreeHead.from_dict(canonical.parse(r.first_head.encode())),
                     SignedTreeHead.from_dict(canonical.parse(r.second_head.encode())))
                    for r in conn.execute(query)]

    def store_cosignature(self, cosignature: Cosignature, witness_key: LedgerPublicKey) -> None:
        """Keep a partner's cosignature of one of this node's own heads (after checking it)."""
        if cosignature.head.node != self.ledger.node_id:
            raise WitnessError("the cosignature is over another node's head")
        try:
            cosignature.verify(witness_key)
            cosignature.head.verify(self.ledger.public_key)
        except SignatureError:
            raise WitnessError("the cosignature or the head it covers does not verify") from None
        with self.ledger.engine.begin() as conn:
            conn.execute(insert(witness_cosignatures).values(
                log_node=self.ledger.node_id, witness=cosignature.witness,
                size=cosignature.head.size, cosignature=canonical.dump(cosignature.to_dict()).decode(),
                created_at=datetime.now(timezone.utc)))

    def cosignatures(self, log_node: str | None = None) -> list[Cosignature]:
        query = select(witness_cosignatures.c.cosignature).order_by(witness_cosignatures.c.id)
        query = query.where(witness_cosignatures.c.log_node == (log_node or self.ledger.node_id))
        with self.ledger.engine.connect() as conn:
            return [Cosignature.from_dict(canonical.parse(t.encode())) for t in conn.execute(query).scalars()]
