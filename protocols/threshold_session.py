"""Private threshold checks, "income >= threshold" per applicant: the two sessions.

The fund centre holds the agency's threshold table for the epoch
(protocols/threshold_table.py: per usable row a tag F_k(y)[:t] and Enc(income) sealed
under F_k(y)). One query, in the messages of protocols/session.py::

    fund centre (ThresholdAsker)                 agency (ThresholdAnswerer)
                                                 start(): StatisticsAccepted(rows,
    <- StatisticsAccepted                        batch and chunk sizes)
    -> ElementBatch(seq, B) per batch            RFC 9497 blinded identifiers
    <- Evaluated(seq, k*B, proof) per batch      under the partner's epoch key (VOPRF:
                                                 one DLEQ proof per batch)
    F_k(x) by unblinding (proof checked); the
    sealed Enc(income) of every applicant whose
    tag is in the table opened
    -> comparison pieces                         threshold.ThresholdRequest: one
                                                 blinded comparison per applicant asked
                                                 (dummies for the unmatched, shuffled)
    <- signs pieces, ThresholdSummary            threshold.ThresholdResponse

Who learns what (details in protocols/threshold.py and the node's statistics service):
the fund centre learns, per applicant, whether a usable income is registered and, if
so, whether it is at least the applicant's threshold; the agency learns the number of
applicants asked, never who, never a threshold, and per comparison a fair-coin sign
and a blurred magnitude. Quotas on the elements asked bound a deviating fund centre's
bisection; they are the node's policy, not this module's.

No network, storage or clock. Randomness: ``rng`` (tests) or the OS CSPRNG
(libsodium for blinds). The agency's OPRF evaluation is injected (``evaluate`` and, in
VOPRF mode, ``prove``): its key stays wherever the node keeps it. Batches of blinding,
unblinding and Paillier work go through ``mapper``.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import phe
import rbcl

from protocols import group, labels, oprf
from protocols import threshold as th
from protocols.session import ProtocolStateError
from protocols.session import (
    AskerSession, Evaluated, InvalidRound, Reassembly, StatisticsAccepted, StatisticsSession,
    StreamEnded, ThresholdSummary, malformed_answer, out_of_turn, refused_answer, split,
)
from protocols.session import ElementBatch
from protocols.threshold_table import PublishedTable, income_label_context

__all__ = ["MAX_THRESHOLD", "check_applicants", "blind_task", "finalize_task",
           "ThresholdAnswers", "ThresholdAsker", "ThresholdAnswerer"]

MAX_THRESHOLD = 2**62
Mapper = Callable[..., Iterable]
Progress = Callable[[str, int, "int | None"], None]


def _noop(stage: str, done: int, total: int | None) -> None:
    pass


def check_applicants(identifiers: Sequence[bytes], thresholds: Sequence[int]) -> None:
    """One integer threshold below 2^62 in magnitude per identifier, at least one.

    Raises:
        ValueError: otherwise.
    """
    if not identifiers or len(identifiers) != len(thresholds):
        raise ValueError("give one threshold per identifier, and at least one")
    if any(not isinstance(t, int) or abs(t) >= MAX_THRESHOLD for t in thresholds):
        raise ValueError("thresholds must be integers below 2^62 in magnitude")


# --- picklable OPRF batches (for a process pool through ``mapper``) -----------------


def blind_task(inputs: Sequence[bytes], mode: int, blinds: Sequence[bytes] | None
               ) -> tuple[bytes, bytes]:
    """(packed blinds to keep, packed blinded elements to send) for one batch."""
    kept, blinded = oprf.blind(list(inputs), None if blinds is None else list(blinds), mode=mode)
    return b"".join(kept), blinded


def finalize_task(inputs: Sequence[bytes], packed_blinds: bytes, packed_blinded: bytes,
                  packed_evaluated: bytes, mode: int, proof: bytes, public_key: bytes) -> bytes:
    """The batch's packed 64-byte outputs F_k(x); VOPRF: only after the proof verified.

    Raises:
        oprf.InvalidElement: evaluations or a proof that do not verify.
    """
    blinds = group.split_elements(packed_blinds)
    if mode == oprf.MODE_OPRF:
        return b"".join(oprf.finalize(list(inputs), blinds, packed_evaluated))
    return b"".join(oprf.finalize_verified(list(inputs), blinds, packed_blinded,
                                           packed_evaluated, proof, public_key))


def _random_scalar(rng: random.Random) -> bytes:
    while True:
        s = rbcl.crypto_core_ristretto255_scalar_reduce(rng.randbytes(64))
        if group.is_nonzero_scalar(s):
            return s


# --- the fund centre ----------------------------------------------------------------


@dataclass(frozen=True)
class ThresholdAnswers:
    """Per applicant, in the order given: income >= threshold; None: no usable income."""

    answers: list[bool | None]
    rows: int               # agency rows with a usable income
    unusable_rows: int      # rows left out (income not an integer in range)

    @property
    def matched(self) -> int:
        return sum(a is not None for a in self.answers)


class ThresholdAsker(AskerSession):
    """The fund centre's side of one threshold query; single use.

    Args:
        identifiers, thresholds: one applicant each, aligned (duplicates included).
        table: the agency's current table for this node (its digest is in the header).
        owner, asker, dataset: the agency's and this node's ids, the dataset: the
            sealed incomes are bound to them.
        oprf_mode, public_key: the dataset's RFC 9497 mode and, for VOPRF, pkS.
        chunk_bytes: the largest piece this side sends (the agency may ask for less).
    """

    def __init__(self, identifiers: Sequence[bytes], thresholds: Sequence[int],
                 table: PublishedTable, *, owner: str, asker: str, dataset: str,
                 oprf_mode: int, public_key: bytes = b"", chunk_bytes: int,
                 rng: random.Random | None = None, mapper: Mapper = map,
                 progress: Progress = _noop) -> None:
        super().__init__()
        check_applicants(identifiers, thresholds)
        self._inputs, self._thresholds = list(identifiers), list(thresholds)
        self.elements = len(self._inputs)
        self._table, self._mode, self._pk = table, oprf_mode, public_key
        self._context = income_label_context(owner=owner, partner=asker, dataset=dataset,
                                             epoch=table.epoch, key_id=table.key_id)
        self._chunk, self._rng, self._mapper = chunk_bytes, rng, mapper
        self._progress = progress

    def _start(self) -> list:
        """Nothing to send before the agency's StatisticsAccepted says how large a batch may be."""
        self._stage = "accepted"
        return []

    def _message_steps(self) -> dict:
        return {"accepted": self._batches, "evaluated": self._evaluated,
                "summary": self._summary}

    def _round_steps(self) -> dict:
        return {"signs": self._signs}

    def _batches(self, message: object) -> list:
        if not isinstance(message, StatisticsAccepted):
            raise malformed_answer(out_of_turn("accepted", message))
        self._accepted = message
        m, step = self.elements, max(1, min(message.max_batch_elements, oprf.MAX_VOPRF_BATCH))
        self._bounds = [(a, min(m, a + step)) for a in range(0, m, step)]
        parts = [self._inputs[a:b] for a, b in self._bounds]
        blinds = [None if self._rng is None else [_random_scalar(self._rng) for _ in part]
                  for part in parts]
        self._blinded = list(self._mapper(blind_task, parts, [self._mode] * len(parts), blinds))
        self._evaluations: list[tuple[bytes, bytes]] = []
        self._stage = "evaluated"
        return [ElementBatch(seq, elements) for seq, (_, elements) in enumerate(self._blinded)]

    def _evaluated(self, message: object) -> list:
        if not isinstance(message, Evaluated):
            raise malformed_answer(out_of_turn("evaluated", message))
        seq = len(self._evaluations)
        a, b = self._bounds[seq]
        if message.seq != seq or len(message.elements) != (b - a) * oprf.ELEMENT_LEN:
            raise malformed_answer(InvalidRound(
                f"evaluated batch {seq} is out of order or of the wrong size"))
        self._evaluations.append((message.elements, message.proof))
        self._progress("evaluate", b, self.elements)
        if len(self._evaluations) < len(self._bounds):
            return []
        return self._compare(self._open_incomes(self._outputs()))

    def _outputs(self) -> bytes:
        """F_k(x) per input, 64 bytes each; VOPRF: every batch's proof checked first."""
        k = len(self._bounds)
        try:
            outs = self._mapper(
                finalize_task, [self._inputs[a:b] for a, b in self._bounds],
                [kept for kept, _ in self._blinded], [sent for _, sent in self._blinded],
                [e for e, _ in self._evaluations], [self._mode] * k,
                [p for _, p in self._evaluations], [self._pk] * k)
            return b"".join(outs)
        except ValueError:  # oprf.InvalidElement: a bad element or a proof that fails
            raise refused_answer(th.ThresholdError(
                "evaluations that do not verify against the published key")) from None

    def _open_incomes(self, outputs: bytes) -> dict[int, int]:
        """Input index -> Enc(income) for the inputs whose tag is in the table."""
        w, width = oprf.OUTPUT_LEN, 2 * ((self._table.n.bit_length() + 7) // 8)
        found = {}
        for i, sealed in self._table.lookup(outputs, w).items():
            try:
                blob = labels.open_blob(outputs[i * w:(i + 1) * w], sealed, self._context, width)
            except labels.LabelError:
                raise InvalidRound("sent a sealed income that does not open for a matched "
                                   "row") from None
            found[i] = int.from_bytes(blob, "big")
        return found

    def _compare(self, found: dict[int, int]) -> list:
        n, m = self._table.n, self.elements
        applicants = [(c, self._thresholds[i]) for i, c in found.items()]
        if not applicants:  # keep the batch full-size: the agency must not see "none matched"
            dummy = th.FixedBaseRandomizer(n, rng=self._rng)
            applicants = [(dummy.encrypt(1), 0)]
        try:
            self._comparer = th.FundCentreThreshold(n, applicants, batch_size=m,
                                                    rng=self._rng, mapper=self._mapper)
            request = self._comparer.request().to_bytes()
        except th.ThresholdError as exc:
            raise refused_answer(exc) from None
        self._found = list(found)
        self._stage, self._round = "signs", Reassembly("signs", m // 8 + 64)
        self.outgoing_done = True
        size = min(self._chunk, self._accepted.max_chunk_bytes or 2**20)
        return split("comparison", request, size)

    def _signs(self, data: bytes) -> list:
        try:
            decided = self._comparer.decide(th.ThresholdResponse.from_bytes(data))
        except th.ThresholdError as exc:
            raise refused_answer(exc) from None
        answers: list[bool | None] = [None] * self.elements
        for i, yes in zip(self._found, decided):
            answers[i] = yes
        self._answers = answers
        self._stage, self._round = "summary", None
        return []

    def _summary(self, message: object) -> list:
        if not isinstance(message, ThresholdSummary):
            raise malformed_answer(out_of_turn("summary", message))
        if message.entries != self.elements:
            raise InvalidRound("answered another number of comparisons than asked")
        self._progress("compare", self.elements, self.elements)
        self._finish(ThresholdAnswers(self._answers, self._accepted.rows,
                                      self._accepted.unusable_rows))
        return []


# --- the agency ---------------------------------------------------------------------


class ThresholdAnswerer(StatisticsSession):
    """The agency's side of one admitted threshold query; single use.

    Args:
        private_key: the Paillier key of the table the asker holds.
        elements: the number of applicants the asker announced; exactly these are answered.
        rows, unusable_rows: the table's usable rows, and those left out (counts).
        evaluate: packed blinded elements -> packed k * B_i under the partner's epoch
            key (raises oprf.InvalidElement for an invalid element).
        prove: VOPRF datasets: (blinded, evaluated) -> DLEQ proof; None in OPRF mode.
        max_batch: blinded elements per batch, at most (<= oprf.MAX_VOPRF_BATCH).
        chunk_bytes: the largest piece either side sends.
    """

    def __init__(self, private_key: phe.PaillierPrivateKey, *, elements: int, rows: int,
                 unusable_rows: int, evaluate: Callable[[bytes], bytes],
                 prove: Callable[[bytes, bytes], bytes] | None, max_batch: int,
                 chunk_bytes: int, mapper: Mapper = map) -> None:
        super().__init__()
        self._agency = th.AgencyThreshold(private_key, min_batch=elements, max_batch=elements,
                                          mapper=mapper)
        self._width = 2 * ((private_key.public_key.n.bit_length() + 7) // 8)
        self._m, self._rows, self._unusable = elements, rows, unusable_rows
        self._evaluate, self._prove = evaluate, prove
        self._max_batch = min(max_batch, oprf.MAX_VOPRF_BATCH)
        self._chunk = chunk_bytes
        self._round: Reassembly | None = None
        self._seq = 0

    def _start(self) -> list:
        self._stage = "batch"
        return [StatisticsAccepted(rows=self._rows, unusable_rows=self._unusable,
                         max_chunk_bytes=self._chunk, max_batch_elements=self._max_batch)]

    def _ended(self) -> Exception:
        if self._stage == "batch":
            return StreamEnded("the stream ended before every element was sent")
        if self._round is not None:
            return self._round.cut_short()
        return out_of_turn(self._stage, None)

    def _handle(self, message: object) -> list:
        """The messages answering ``message``.

        Raises:
            ProtocolStateError: out of turn, or after the end.
            InvalidRound: a batch of the wrong size or with an invalid element, or a
                refused comparison.
        """
        if self._stage == "batch":
            return self._batch(message)
        if self._round is None:
            raise out_of_turn("nothing more", message)
        data = self._round.add(message)
        return [] if data is None else self._signs(data)

    def _batch(self, message: object) -> list:
        seq, max_batch = self._seq, self._max_batch
        rule = (f"expected batch {seq}: a whole number of 1..{max_batch} blinded elements "
                "within the announced total")
        if not isinstance(message, ElementBatch):
            raise ProtocolStateError(rule)
        count, rest = divmod(len(message.elements), oprf.ELEMENT_LEN)
        if (message.seq != seq or rest or not 1 <= count <= max_batch
                or self.elements_answered + count > self._m):
            raise InvalidRound(rule)
        try:
            evaluated = self._evaluate(message.elements)
        except oprf.InvalidElement:
            raise InvalidRound(f"batch {seq} holds an invalid group element") from None
        proof = self._prove(message.elements, evaluated) if self._prove else b""
        self.elements_answered += count  # charged from here on, however the query ends
        self._seq += 1
        if self.elements_answered == self._m:
            self._stage = "comparison"
            self._round = Reassembly("comparison", 17 + self._m * self._width + 64)
        return [Evaluated(seq, evaluated, proof)]

    def _signs(self, data: bytes) -> list:
        try:
            response = self._agency.respond(th.ThresholdRequest.from_bytes(data))
        except th.ThresholdError as exc:
            raise InvalidRound(f"comparison refused: {exc}") from None
        summary = ThresholdSummary(entries=self._m)
        self._round = None
        self._finish(summary)
        return [*split("signs", response.to_bytes(), self._chunk), summary]
