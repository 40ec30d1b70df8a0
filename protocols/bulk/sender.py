"""The agency's side of the bulk PSI (KKRT16 sender); see :mod:`.session`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from . import base_ot, cuckoo
from .bitmatrix import take_rows
from .blockcipher import element_digests
from .kkrt import ExtensionSender, choice_bits
from .messages import (
    CORRECTION, HASHING_KEY, HELLO, Correction, HashingKey, Hello, InvalidMessage,
    ProtocolStateError, Setup, Values,
)
from .params import MAX_ELEMENTS, ROW_ALIGN, WIDTH_BYTES, derive
from .session import (
    DEFAULT_CHUNK_ELEMENTS, MAX_CHUNK_ELEMENTS, MAX_CHUNK_ROWS, RandomBytes, Session, StageHook,
    as_elements, has_duplicates, session_keys,
)

__all__ = ["BulkSender"]


class BulkSender(Session):
    """The agency: ``handle`` the Hello, then each correction chunk; sends value chunks."""

    __slots__ = ("_y", "_chunk", "_max_peer", "_announced", "_params", "_chunk_rows", "_ext", "_keys",
                 "_digests", "_bins", "_order", "_next", "_state")

    def __init__(self, elements: Sequence[bytes] | np.ndarray, *,
                 random_bytes: RandomBytes = os.urandom,
                 chunk_elements: int = DEFAULT_CHUNK_ELEMENTS,
                 max_receiver_elements: int = MAX_ELEMENTS, receiver_size: int | None = None,
                 on_stage: StageHook | None = None) -> None:
        """``receiver_size``: the fund centre's size announced beforehand (the node's query
        header, on which its quota is reserved); a Hello declaring another is refused."""
        super().__init__(random_bytes, on_stage)
        if not 1 <= chunk_elements <= MAX_CHUNK_ELEMENTS:
            raise ValueError("chunk_elements must lie in 1..2^18")
        self._y = as_elements(elements)
        derive(1, self._y.size)  # size limits
        self._chunk, self._max_peer = chunk_elements, max_receiver_elements
        self._announced = receiver_size
        self._state, self._next = "hello", 0

    @property
    def receiver_size(self) -> int | None:
        """The fund centre's set size, once its Hello arrived (all the agency learns)."""
        return self._params.receiver_size if self._state != "hello" else None

    @property
    def oprf_evaluations(self) -> int | None:
        """OPRF evaluations the fund centre obtains (bins): what its quota is charged."""
        return self._params.bins if self._state != "hello" else None

    def _dispatch(self, kind: int, message: bytes) -> Iterable[bytes]:
        if self._state == "hello" and kind == HELLO:
            return self._on_hello(Hello.from_bytes(message))
        if self._state == "key" and kind == HASHING_KEY:
            return self._on_hashing_key(HashingKey.from_bytes(message).key)
        if self._state == "corrections" and kind == CORRECTION:
            return self._on_correction(message)
        raise ProtocolStateError("message of another round")

    def _on_hello(self, hello: Hello) -> Iterator[bytes]:
        n1 = hello.receiver_size
        if not 1 <= n1 <= self._max_peer or self._announced not in (None, n1):
            raise InvalidMessage()
        params = derive(n1, self._y.size)
        chunk = hello.chunk_rows
        if hello.bins != params.bins or chunk % ROW_ALIGN or not ROW_ALIGN <= chunk <= MAX_CHUNK_ROWS:
            raise InvalidMessage()
        self._stage("base_ot")
        choices = choice_bits(self._rb(WIDTH_BYTES))
        try:
            replies, seeds = base_ot.receiver_choose(hello.base_ot_point, choices, self._rb)
        except base_ot.BaseOtError:
            raise InvalidMessage() from None
        seed = self._rb(32)
        self._params, self._chunk_rows = params, chunk
        self._ext = ExtensionSender(seeds, choices, params.bins)
        self._keys = session_keys(seed)
        self._state = "key"
        return iter((Setup(self._y.size, self._chunk, seed, replies).to_bytes(),))

    def _on_hashing_key(self, hashing_key: bytes) -> Iterator[bytes]:
        self._state = "corrections"
        return self._hash_elements(hashing_key)

    def _hash_elements(self, hashing_key: bytes) -> Iterator[bytes]:
        # Nothing to send: the work runs when the (empty) stream is taken.
        yield from ()
        self._stage("hashing")
        self._digests = element_digests(hashing_key, self._y)
        if has_duplicates(self._digests):
            raise ValueError("elements must be distinct")
        self._bins = cuckoo.candidate_bins(self._digests, self._params.bins)
        # A fresh random order, so a match tells nothing of a row's place in the dataset:
        # sorting independent random 64-bit keys (ties ~n^2/2^65, kept in row order).
        keys = np.frombuffer(self._rb(8 * self._y.size), "<u8")
        self._order = np.argsort(keys, kind="stable")

    def _on_correction(self, message: bytes) -> Iterator[bytes]:
        lo = self._next * self._chunk_rows
        rows = min(self._chunk_rows, self._params.bins - lo)
        chunk = Correction.from_bytes(message, self._next, rows)
        self._stage("extension")
        self._ext.absorb(chunk.rows)
        self._next += 1
        if not self._ext.complete:
            return iter(())
        self._state = "values"
        return self._values()

    def _values(self) -> Iterator[bytes]:
        code, pi = self._keys
        n, size, width = self._y.size, self._chunk, self._params.value_bytes
        for index, lo in enumerate(range(0, n, size)):
            self._stage("oprf_hash")
            idx = self._order[lo:lo + size]
            values = self._ext.evaluate(pi, code, take_rows(self._digests, idx), self._bins[idx], width)
            yield Values(index, values).to_bytes()
        self.finished = True
        self._state = "done"
