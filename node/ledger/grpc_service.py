"""The Ledger gRPC service (proto/shuqiao/v1/ledger.proto): a thin adapter, and its LogSource.

`LedgerService` maps each call onto `Ledger` / `Witness`; what it refuses, it raises as
the node's refusals, and node/transport/status.py gives each its status: a size or index
beyond the tree is OUT_OF_RANGE (BeyondTree), a malformed request INVALID_ARGUMENT, a
head this node refuses to witness FAILED_PRECONDITION (WitnessError), or
PERMISSION_DENIED when the caller presents another node's head. Who may call is decided
before any handler runs, by the node's mTLS interceptor; Cosign additionally uses the
caller's authenticated node id, so a partner can only ask for its own head to be cosigned.

`GrpcLogSource` is the auditor's side: a LogSource over a channel the caller opened
(with the auditor's or the partner's mTLS credentials).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator

import grpc

from protocols import merkle

from node.core.errors import InvalidRequest, NotPermitted, ProtocolViolation
from node.rpc.shuqiao.v1 import ledger_pb2 as pb
from node.rpc.shuqiao.v1 import ledger_pb2_grpc as pb_grpc
from node.ledger import canonical
from node.ledger.anchor import KeyCertification, current_certification, current_head
from node.ledger.canonical import CanonicalError
from node.ledger.log import BeyondTree, Ledger
from node.ledger.signing import Cosignature, LedgerPublicKey, SignatureError, SignedTreeHead
from node.ledger.sources import SourceError
from node.ledger.witness import Witness
from node.transport.status import refusals

__all__ = ["LedgerService", "GrpcLogSource", "head_to_pb", "head_from_pb", "ask_cosignature",
           "ask_certified_cosignature",
           "exchange_notes"]

MAX_ENTRIES_PER_CALL = 1_000_000


def head_to_pb(head: SignedTreeHead) -> pb.SignedTreeHead:
    return pb.SignedTreeHead(node=head.node, size=head.size, root=head.root, time=head.time,
                             signature=head.signature)


def head_from_pb(msg: pb.SignedTreeHead) -> SignedTreeHead:
    return SignedTreeHead(msg.node, msg.size, msg.root, msg.time, msg.signature)


class LedgerService(pb_grpc.LedgerServicer):
    """Serves one node's ledger; `peer_id(context)` is the mTLS-authenticated caller."""

    def __init__(self, ledger: Ledger, peer_id: Callable[[grpc.ServicerContext], str | None],
                 witness: Witness | None = None) -> None:
        self.ledger = ledger
        self.peer_id = peer_id
        self.witness = witness or Witness(ledger)

    def GetTreeHead(self, request, context):
        head = current_head(self.ledger)
        msg = head_to_pb(head)
        from node.ledger.witness_pki import certifications_of
        cosignatures = self.witness.cosignatures_of(head)
        held = certifications_of(self.ledger.engine, {c.witness for c in cosignatures})
        msg.cosignatures.extend(pb.Cosignature(
            witness=c.witness, time=c.time, signature=c.signature,
            certification=KeyCertification.from_dict(held[c.witness][-1]).to_json()
            if c.witness in held else "") for c in cosignatures)
        return msg

    def GetWitnessing(self, request, context):
        from node.ledger.witness_evidence import evidence
        return pb.WitnessDocument(document=canonical.dump(evidence(self.witness)))

    @refusals
    def Exchange(self, request, context):
        from node.ledger.witness_gossip import exchange_document, take
        peer = self.peer_id(context)
        if peer is None:
            raise NotPermitted("no authenticated partner")
        try:
            take(self.witness, peer, canonical.parse(request.document))
        except (CanonicalError, SignatureError, KeyError, TypeError, ValueError) as exc:
            raise ProtocolViolation(f"malformed exchange document: {exc}") from None
        return pb.WitnessDocument(document=canonical.dump(exchange_document(self.witness, peer)))

    def GetPublicKey(self, request, context):
        key = self.ledger.public_key
        certification = current_certification(self.ledger.engine, key)
        return pb.PublicKey(node=self.ledger.node_id, public_key=key.text,
                            certification=certification.to_json() if certification else "")

    @refusals
    def GetEntries(self, request, context):
        size = self.ledger.size()
        if request.end > size or request.start > request.end:
            raise BeyondTree(f"entries [{request.start}, {request.end}) are not within [0, {size})")
        if request.end - request.start > MAX_ENTRIES_PER_CALL:
            raise InvalidRequest(f"at most {MAX_ENTRIES_PER_CALL} entries per call")
        for index, data in self.ledger.entries(request.start, request.end):
            yield pb.LedgerEntry(index=index, entry=data)

    @staticmethod
    def _proof(make: Callable[[], list[bytes]]) -> pb.Proof:
        """A proof the caller asked for; beyond the tree is BeyondTree, raised by the ledger."""
        try:
            return pb.Proof(hashes=make())
        except merkle.ProofError as exc:  # an index or sizes no proof exists for
            raise InvalidRequest(str(exc)) from None

    @refusals
    def GetInclusionProof(self, request, context):
        return self._proof(lambda: self.ledger.inclusion_proof(request.index, request.size))

    @refusals
    def GetConsistencyProof(self, request, context):
        return self._proof(lambda: self.ledger.consistency_proof(request.first, request.second))

    @refusals
    def Cosign(self, request, context):
        peer = self.peer_id(context)
        try:
            head = head_from_pb(request.head)
            key = LedgerPublicKey.from_text(request.public_key)
        except (CanonicalError, SignatureError) as exc:
            raise ProtocolViolation(f"malformed head or key: {exc}") from None
        if peer is None or head.node != peer:
            raise NotPermitted("a node may only ask for its own tree head to be cosigned")
        proof_from = request.proof_from if request.HasField("proof_from") else None
        seen = self.witness.observe(peer, key, head, proof_from, list(request.consistency_proof))
        if seen.verdict == "cosigned":
            c = seen.cosignature
            mine = current_certification(self.ledger.engine, self.ledger.public_key)
            return pb.CosignResponse(cosignature=pb.Cosignature(
                witness=c.witness, time=c.time, signature=c.signature,
                certification=mine.to_json() if mine else ""))
        if seen.verdict == "need_proof":
            return pb.CosignResponse(need_proof_from=seen.need_proof_from)
        return pb.CosignResponse(conflict=pb.Conflict(
            kind=seen.verdict, earlier_head=head_to_pb(seen.conflicting_head)))


class GrpcLogSource:
    """A LogSource over a `Ledger` gRPC channel; every call has a deadline."""

    def __init__(self, channel: grpc.Channel, name: str, *, timeout: float = 60.0) -> None:
        self.name = name
        self._stub = pb_grpc.LedgerStub(channel)
        self._timeout = timeout

    def _call(self, method, request):
        try:
            return method(request, timeout=self._timeout)
        except grpc.RpcError as exc:
            raise self._failed(exc) from None

    def _failed(self, exc: grpc.RpcError) -> SourceError:
        error = SourceError(f"{self.name}: {exc.code().name}: {exc.details()}")
        error.code = exc.code()  # a caller may retry a transient one (node/transport/channels.py)
        return error

    def public_key(self) -> LedgerPublicKey:
        self._key_msg = self._call(self._stub.GetPublicKey, pb.GetPublicKeyRequest())
        return LedgerPublicKey.from_text(self._key_msg.public_key)

    def key_certification(self) -> KeyCertification | None:
        """The certification the node published with its key (None: it has none)."""
        msg = getattr(self, "_key_msg", None) or self._call(self._stub.GetPublicKey,
                                                            pb.GetPublicKeyRequest())
        return KeyCertification.from_json(msg.certification) if msg.certification else None

    def tree_head(self) -> SignedTreeHead:
        return head_from_pb(self._call(self._stub.GetTreeHead, pb.GetTreeHeadRequest()))

    def witnessing(self) -> dict:
        """The node's witness record (witness_evidence.py)."""
        doc = self._call(self._stub.GetWitnessing, pb.GetWitnessingRequest()).document
        try:
            return canonical.parse(doc)
        except CanonicalError as exc:
            raise SourceError(f"{self.name}: malformed witness record ({exc})") from None

    def entries(self, start: int, end: int) -> Iterator[tuple[int, bytes]]:
        request = pb.GetEntriesRequest(start=start, end=end)
        try:
            for msg in self._stub.GetEntries(request, timeout=self._timeout * 10):
                yield msg.index, msg.entry
        except grpc.RpcError as exc:
            raise self._failed(exc) from None

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        request = pb.GetInclusionProofRequest(index=index, size=size)
        return list(self._call(self._stub.GetInclusionProof, request).hashes)

    def consistency_proof(self, first: int, second: int) -> list[bytes]:
        request = pb.GetConsistencyProofRequest(first=first, second=second)
        return list(self._call(self._stub.GetConsistencyProof, request).hashes)


def ask_cosignature(ledger: Ledger, channel: grpc.Channel, *, timeout: float = 30.0):
    """Ask the partner behind `channel` to witness this node's latest head.

    Returns the partner's Cosignature (check and keep it with
    `Witness.store_cosignature(cosignature, partner_key)`), or ("fork" | "rollback" |
    "inconsistent", earlier head) when the partner reports a conflict.
    """
    return ask_certified_cosignature(ledger, channel, timeout=timeout)[0]


def ask_certified_cosignature(ledger: Ledger, channel: grpc.Channel, *, timeout: float = 30.0):
    """`ask_cosignature`, and the witness's key certification it attached (or None).

    Raises:
        CertificationError: the attached certification is malformed.
    """
    stub = pb_grpc.LedgerStub(channel)
    head = ledger.sign_head()
    request = pb.CosignRequest(head=head_to_pb(head), public_key=ledger.public_key.text)
    answer = stub.Cosign(request, timeout=timeout)
    if answer.WhichOneof("result") == "need_proof_from":
        first = answer.need_proof_from
        request.proof_from = first
        request.consistency_proof.extend(ledger.consistency_proof(first, head.size))
        answer = stub.Cosign(request, timeout=timeout)
    kind = answer.WhichOneof("result")
    if kind == "cosignature":
        c = answer.cosignature
        certification = KeyCertification.from_json(c.certification) if c.certification else None
        return Cosignature(c.witness, c.time, head, c.signature), certification
    if kind == "conflict":
        return (answer.conflict.kind, head_from_pb(answer.conflict.earlier_head)), None
    raise SourceError("the witness asked for a proof twice")


def exchange_notes(witness: Witness, peer: str, channel: grpc.Channel, prove=None, *,
                   timeout: float = 30.0) -> list[str]:
    """One Exchange with `peer` (witness_gossip.py); returns the conflict kinds it revealed."""
    from node.ledger.witness_gossip import exchange_document, take
    stub = pb_grpc.LedgerStub(channel)
    answer = stub.Exchange(pb.WitnessDocument(
        document=canonical.dump(exchange_document(witness, peer))), timeout=timeout)
    return take(witness, peer, canonical.parse(answer.document), prove)
