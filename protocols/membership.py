"""Membership sessions: which of the asker's identifiers are in the answerer's dataset, by
batched OPRF or VOPRF (RFC 9497, ristretto255-SHA512; the arithmetic is protocols/oprf.py).

The asker matches the outputs F_k(x) against the answerer's tag table (F_k(y) truncated,
synced apart and cached by the node), so one query costs O(number asked). One query is
the Evaluate stream of proto/shuqiao/v1/membership.proto::

    asker (inputs x_1..x_n)                     answerer (key k, pkS = k*G)
    Header(n)                    --- 1 --->     (the node admits the query first)
                                 <-- 2 ----     Accepted(largest batch)
    per batch i, each r_j fresh:
    ElementBatch(i, B_j = r_j*H(x_j)) - 3 ->    in order, whole, within n, no repeat, valid
                                 <-- 4 ----     ElementBatch(i, E_j = k*B_j)
    VOPRF: ProofRequest(i, S)    --- 5 --->     S picked after E_i arrived (a sample, or all)
                                 <-- 6 ----     BatchProof(i, DLEQ that E_S = k*B_S, pkS = k*G)
    Finish, once every batch is answered (and proven)
                                 --- 7 --->     every announced element came
                                 <-- 8 ----     Summary(n)
    F_k(x_j) = SHA-512(x_j, (1/r_j)*E_j), kept to `width` bytes (a tag, or the whole
    output when it also opens a label)

Who learns what. The answerer sees n and n uniformly random group elements, fresh per
query (it cannot tell two queries about one person apart); it learns nothing about the
x_j, nor which of them matched. The asker learns F_k(x_j), hence which of its x_j are in
the table, and nothing about k. It can evaluate F_k on anything it likes, so what and
how much it may ask is the node's policy, not this module's. A blinded element repeated
within a query comes from no honest asker (each is freshly blinded) and is refused.

Sampled verification (VOPRF): the answerer commits to E_i before the asker names S, and
cannot tell whose element is whose, so answering r of a batch's m elements under another
key than pkS escapes a sample of s with probability about (1 - r/m)^s. With
``proof_sample=None`` every element is proven.

The heavy work is batched and picklable: the asker's :func:`blind_batch` and
:func:`finalize_batch` go through an injected ``submit`` (``Executor.submit``); the
answerer evaluates and proves through an :class:`Evaluator` (the node's keeps the key
sealed and evaluates on its process pool). Randomness: libsodium's CSPRNG for the blinds
(``blinds`` injects them, for known-answer tests) and ``rng`` for the proof samples.
"""
from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Protocol

from protocols import oprf
from protocols.session import ProtocolStateError
from protocols.session import (
    Accepted, BaseSession, ElementBatch, Finish, Header, Submit, run_now, unexpected,
)

__all__ = [
    "Header", "Accepted", "ElementBatch", "ProofRequest", "BatchProof", "Finish", "Summary",
    "InvalidMessage", "ProtocolStateError", "Evaluator", "KeyEvaluator", "MembershipAsker",
    "MembershipAnswerer", "blind_batch", "finalize_batch", "pick",
]

W = oprf.ELEMENT_LEN


class InvalidMessage(ValueError):
    """A peer's membership message broke a rule. The reason names the rule and the batch,
    never an element, so the node may send it back to the peer."""


@dataclass(frozen=True)
class ProofRequest:
    """Asker -> answerer (VOPRF): prove batch `seq` at these distinct, ascending indices."""

    seq: int
    indices: tuple[int, ...]


@dataclass(frozen=True)
class BatchProof:
    """Answerer -> asker (VOPRF): RFC 9497 DLEQ proof c || s over the requested pairs."""

    seq: int
    proof: bytes


@dataclass(frozen=True)
class Summary:
    """Answerer -> asker, last: the elements it evaluated (the node adds its receipt)."""

    elements_evaluated: int


# -- batch work (picklable module functions, for a process pool) ---------------------------

def blind_batch(inputs: Sequence[bytes], mode: int = oprf.MODE_OPRF,
                blinds: Sequence[bytes] | None = None) -> tuple[bytes, bytes]:
    """(packed blinds r_j, packed B_j) for one batch of inputs (round 3)."""
    kept, packed = oprf.blind(inputs, blinds, mode)
    return b"".join(kept), packed


def finalize_batch(inputs: Sequence[bytes], packed_blinds: bytes, packed_evaluated: bytes,
                   width: int, mode: int = oprf.MODE_OPRF, proof: bytes = b"",
                   public_key: bytes = b"", sample: Sequence[int] = ()) -> bytes:
    """Unblind one batch to outputs kept to `width` bytes; in VOPRF mode the proof over
    `sample` is checked first.

    Raises:
        oprf.InvalidElement: an invalid evaluation, or a proof that does not verify.
    """
    blinds = [packed_blinds[i:i + W] for i in range(0, len(packed_blinds), W)]
    if mode == oprf.MODE_OPRF:
        outs = oprf.finalize(inputs, blinds, packed_evaluated)
    else:
        # B_j of the sampled elements, recomputed from r_j (cheaper than keeping the batch).
        _, sampled = oprf.blind([inputs[i] for i in sample], [blinds[i] for i in sample], mode)
        oprf.verify_proof(public_key, sampled, pick(packed_evaluated, sample), proof)
        outs = oprf.finalize_sampled(inputs, blinds, packed_evaluated)
    return b"".join(out[:width] for out in outs)


def pick(packed: bytes, indices: Sequence[int]) -> bytes:
    """The packed elements at `indices`, in that order."""
    return b"".join(packed[i * W:(i + 1) * W] for i in indices)


# -- the answerer ---------------------------------------------------------------------------

class Evaluator(Protocol):
    """The answerer's key at work: k*B_j for a batch, and DLEQ proofs over chosen pairs."""

    def evaluate(self, packed_blinded: bytes) -> bytes:
        """Packed k*B_j; oprf.InvalidElement if any B_j is invalid."""

    def prove(self, packed_blinded: bytes, packed_evaluated: bytes) -> bytes:
        """One RFC 9497 batched DLEQ proof that every E_j = k*B_j under pkS."""


class KeyEvaluator:
    """An :class:`Evaluator` over a key held in this process (tests and tools)."""

    __slots__ = ("_key",)

    def __init__(self, key: oprf.OprfSecretKey) -> None:
        self._key = key

    def evaluate(self, packed_blinded: bytes) -> bytes:
        # k*B_j is the same arithmetic in both modes; VOPRF proofs come from prove().
        return oprf.blind_evaluate(self._key, packed_blinded)

    def prove(self, packed_blinded: bytes, packed_evaluated: bytes) -> bytes:
        return oprf.prove(self._key, packed_blinded, packed_evaluated)

    def __repr__(self) -> str:
        return "<KeyEvaluator secret hidden>"


class MembershipAnswerer(BaseSession):
    """The answerer's side of one query, from its admitted header on; never reused.

    Args:
        header: the asker's first message (the node admitted the query it heads).
        evaluator: the query's key (see :class:`Evaluator`).
        max_batch: the largest batch taken, announced in Accepted.
        verifiable: VOPRF: proof requests are answered (in OPRF mode they are refused).

    ``evaluated`` counts the elements whose evaluation has been handed out: the node
    charges them however the query ends. ``result()`` is that count once finished.
    """

    def __init__(self, header: Header, evaluator: Evaluator, *, max_batch: int,
                 verifiable: bool) -> None:
        super().__init__()
        if header.total_elements < 1 or max_batch < 1:
            raise ValueError("a query asks at least one element, in batches of at least one")
        self._total, self._evaluator = header.total_elements, evaluator
        self._max, self._verifiable = max_batch, verifiable
        self._seq = self._evaluated = 0
        self._unproven: dict[int, tuple[bytes, bytes]] = {}  # VOPRF: seq -> (B, E) to prove
        # The query's blinded elements so far, by their first 8 bytes (each honest element
        # is freshly blinded, so a repeat is no honest asker's: it is refused, not evaluated).
        self._asked: set[int] = set()

    @property
    def evaluated(self) -> int:
        return self._evaluated

    def result(self) -> int:
        self._check_result()
        return self._evaluated

    def _start(self) -> list:
        return [Accepted(self._max)]

    def _handle(self, message: object) -> list:
        if isinstance(message, Finish):
            if self._evaluated != self._total:
                raise InvalidMessage(f"finish after {self._evaluated} of {self._total} "
                                     "announced elements")
            self._finished = True
            return [Summary(self._total)]
        if isinstance(message, ProofRequest) and self._verifiable:
            return [self._prove(message)]
        if not isinstance(message, ElementBatch):
            raise ProtocolStateError("expected a batch, a proof request or finish")
        return [self._evaluate(message)]

    def _evaluate(self, batch: ElementBatch) -> ElementBatch:
        n, rem = divmod(len(batch.elements), W)
        if (batch.seq != self._seq or rem or not 1 <= n <= self._max
                or self._evaluated + n > self._total):
            raise InvalidMessage(
                f"batch {batch.seq} is malformed (expected seq {self._seq}, a whole number of "
                f"1..{self._max} elements within the announced total)")
        before = len(self._asked)
        self._asked.update(int.from_bytes(batch.elements[i:i + 8], "little")
                           for i in range(0, len(batch.elements), W))
        if len(self._asked) != before + n:
            raise InvalidMessage(f"batch {batch.seq} repeats a blinded element of this query")
        try:
            evaluated = self._evaluator.evaluate(batch.elements)
        except oprf.InvalidElement:
            raise InvalidMessage(f"batch {batch.seq} holds an invalid group element") from None
        if self._verifiable:
            self._unproven[batch.seq] = (batch.elements, evaluated)
        self._evaluated += n
        self._seq += 1
        return ElementBatch(batch.seq, evaluated)

    def _prove(self, request: ProofRequest) -> BatchProof:
        """A DLEQ proof over the elements of one answered batch that the asker picked."""
        pair = self._unproven.pop(request.seq, None)
        indices = list(request.indices)
        if (pair is None or not indices or indices[0] < 0
                or any(b <= a for a, b in zip(indices, indices[1:]))
                or indices[-1] >= len(pair[0]) // W):
            raise InvalidMessage(
                f"proof request for batch {request.seq} names no answered batch, or indices "
                "that are not distinct, ascending and within it")
        proof = self._evaluator.prove(pick(pair[0], indices), pick(pair[1], indices))
        return BatchProof(request.seq, proof)


# -- the asker ------------------------------------------------------------------------------

class MembershipAsker(BaseSession):
    """The asker's side of one query; never reused.

    Round 3's batches cost the asker work before they leave, so they come lazily from
    :meth:`batches` (once Accepted arrived), for a sending thread to drain while
    :meth:`handle` takes the answers: the two share only the blinds, each stored before
    its batch is yielded. ``result()`` is the packed outputs, `width` bytes per input in
    input order; ``summary`` the answerer's Summary, if it came.

    Args:
        inputs: the encoded identifiers asked.
        width: bytes kept of each 64-byte output (the tag length, or all of it).
        max_batch: this node's largest batch (the answerer's Accepted may lower it).
        mode: oprf.MODE_OPRF or oprf.MODE_VOPRF.
        public_key: pkS the VOPRF proofs are checked against (pinned by the node).
        proof_sample: elements proven per VOPRF batch; None proves all of them.
        rng: draws the proof samples (default: the system's CSPRNG).
        submit: ``Executor.submit`` for the batch work (default: run in this thread).
        in_flight: blinding batches submitted ahead of the one being sent.
        blinds: one blind per input, for known-answer tests only.
        progress: called with (inputs finalized so far, inputs) after each batch.
    """

    def __init__(self, inputs: Sequence[bytes], *, width: int, max_batch: int,
                 mode: int = oprf.MODE_OPRF, public_key: bytes = b"",
                 proof_sample: int | None = None, rng: random.Random | None = None,
                 submit: Submit = run_now, in_flight: int = 1,
                 blinds: Sequence[bytes] | None = None,
                 progress: Callable[[int, int], None] | None = None) -> None:
        super().__init__()
        if not inputs:
            raise ValueError("nothing to ask")
        if mode not in (oprf.MODE_OPRF, oprf.MODE_VOPRF) or max_batch < 1 or in_flight < 1:
            raise ValueError("mode is OPRF or VOPRF; batches and lookahead at least one")
        if proof_sample is not None and proof_sample < 1:
            raise ValueError("a proof sample holds at least one element")
        if blinds is not None and len(blinds) != len(inputs):
            raise ValueError("blinds must be one per input")
        self._inputs, self._width, self._max, self._mode = list(inputs), width, max_batch, mode
        self._public_key, self._proof_sample = public_key, proof_sample
        self._rng = rng or random.SystemRandom()
        self._submit, self._in_flight, self._given_blinds = submit, in_flight, blinds
        self._progress = progress or (lambda done, total: None)
        self._bounds: list[tuple[int, int]] | None = None
        self._blinds: dict[int, bytes] = {}     # seq -> packed r_j, until finalized
        self._pending: dict[int, tuple[bytes, list[int]]] = {}  # VOPRF: seq -> (E, sample)
        self._finals: list[Future] = []
        self._batches_taken = False
        self.summary: Summary | None = None
        self._outputs: bytes | None = None

    @property
    def _verifiable(self) -> bool:
        return self._mode == oprf.MODE_VOPRF

    def batches(self) -> Iterator[ElementBatch]:
        """Round 3, blinded lazily with `in_flight` batches submitted ahead."""
        if self._bounds is None or self._batches_taken or self._spent:
            raise ProtocolStateError("batches() follows Accepted, once")
        self._batches_taken = True
        return self._blind_ahead(self._bounds)

    def _blind_ahead(self, bounds: list[tuple[int, int]]) -> Iterator[ElementBatch]:
        ahead: list[tuple[int, Future]] = []
        for seq, (a, b) in enumerate(bounds):
            blinds = None if self._given_blinds is None else self._given_blinds[a:b]
            ahead.append((seq, self._submit(blind_batch, self._inputs[a:b], self._mode, blinds)))
            while ahead and (len(ahead) > self._in_flight or seq == len(bounds) - 1):
                s, future = ahead.pop(0)
                self._blinds[s], blinded = future.result()
                yield ElementBatch(s, blinded)

    def result(self) -> bytes:
        """The outputs, once every batch is answered (and proven).

        Raises:
            ProtocolStateError: the answer ended early.
            InvalidMessage: an invalid evaluation, or a proof that does not verify.
        """
        self._check_result("the answer ended early")
        if self._outputs is None:
            try:
                self._outputs = b"".join(f.result() for f in self._finals)
            except ValueError:  # protocols.oprf.InvalidElement is a ValueError
                raise InvalidMessage("answered with an invalid group element or a proof that "
                                     "does not verify against its published key") from None
        return self._outputs

    def _start(self) -> list:
        return [Header(len(self._inputs))]

    def _handle(self, message: object) -> list:
        if self._bounds is None and isinstance(message, Accepted):
            size = max(1, min(self._max, message.max_batch_elements))
            n = len(self._inputs)
            self._bounds = [(a, min(n, a + size)) for a in range(0, n, size)]
            return []
        if self._bounds is not None and isinstance(message, ElementBatch):
            return self._answered(message)
        if self._bounds is not None and self._verifiable and isinstance(message, BatchProof):
            return self._proven(message)
        if isinstance(message, Summary):
            raise InvalidMessage("summary does not match the query")  # batches are missing
        raise unexpected(message)

    def _after_end(self, message: object) -> list:
        if isinstance(message, Summary) and self.summary is None:
            if message.elements_evaluated != len(self._inputs):
                raise InvalidMessage("summary does not match the query")
            self.summary = message
            return []
        raise ProtocolStateError("a message after the end of the answer")

    def _answered(self, batch: ElementBatch) -> list:
        seq = batch.seq
        if seq != len(self._finals) + len(self._pending) or seq not in self._blinds:
            raise ProtocolStateError("answered batches out of order")
        a, b = self._bounds[seq]
        if len(batch.elements) != (b - a) * W:
            raise InvalidMessage(f"answered batch {seq} with the wrong size")
        if self._verifiable:
            picked = self._sample(b - a)
            self._pending[seq] = (batch.elements, picked)
            return [ProofRequest(seq, tuple(picked))]
        self._finalize(seq, batch.elements)
        return self._finish_when_done()

    def _proven(self, proof: BatchProof) -> list:
        if proof.seq not in self._pending or proof.seq != len(self._finals):
            raise ProtocolStateError("sent a proof for no pending batch")
        evaluated, picked = self._pending.pop(proof.seq)
        self._finalize(proof.seq, evaluated, proof.proof, picked)
        return self._finish_when_done()

    def _sample(self, count: int) -> list[int]:
        if self._proof_sample is None or count <= self._proof_sample:
            return list(range(count))
        return sorted(self._rng.sample(range(count), self._proof_sample))

    def _finalize(self, seq: int, evaluated: bytes, proof: bytes = b"",
                  sample: Sequence[int] = ()) -> None:
        a, b = self._bounds[seq]
        self._finals.append(self._submit(
            finalize_batch, self._inputs[a:b], self._blinds.pop(seq), evaluated, self._width,
            self._mode, proof, self._public_key, list(sample)))
        self._progress(b, len(self._inputs))

    def _finish_when_done(self) -> list:
        if len(self._finals) == len(self._bounds) and not self._pending:
            self._finished = True  # every batch answered (and proven): end the stream
            return [Finish()]
        return []
