"""The fund centre's side of the bulk PSI (KKRT16 receiver); see :mod:`.session`."""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence

import numpy as np

from . import base_ot, cuckoo
from .bitmatrix import put_rows, take_rows
from .blockcipher import Aes, code_words, element_digests
from .kkrt import ExtensionReceiver
from .matching import MatchTable
from .messages import (
    SETUP, VALUES, Correction, HashingKey, Hello, InvalidMessage, ProtocolStateError, Setup, Values,
)
from .params import HASHES, MAX_ELEMENTS, ROW_ALIGN, WIDTH_BYTES, derive
from .session import (
    DEFAULT_CHUNK_ROWS, MAX_CHUNK_ELEMENTS, MAX_CHUNK_ROWS, RandomBytes, Session, StageHook,
    as_elements, has_duplicates, session_keys,
)

__all__ = ["BulkReceiver"]

_REHASH_ATTEMPTS = 16  # each fails w.p. <= 2^-40


class BulkReceiver(Session):
    """The fund centre: ``start()``, then ``handle`` each agency message; ``result()``."""

    __slots__ = ("_x", "_chunk", "_max_peer", "_key", "_digests", "_table", "_a", "_a_point",
                 "_params", "_chunk_elements", "_values", "_matcher", "_matches", "_next",
                 "_state")

    def __init__(self, elements: Sequence[bytes] | np.ndarray, *,
                 random_bytes: RandomBytes = os.urandom, chunk_rows: int = DEFAULT_CHUNK_ROWS,
                 max_sender_elements: int = MAX_ELEMENTS, on_stage: StageHook | None = None) -> None:
        super().__init__(random_bytes, on_stage)
        if chunk_rows % ROW_ALIGN or not ROW_ALIGN <= chunk_rows <= MAX_CHUNK_ROWS:
            raise ValueError("chunk_rows must be a multiple of 128 up to 2^18")
        self._x = as_elements(elements)
        derive(self._x.size, 1)  # size limits, before anything is sent
        self._chunk, self._max_peer = chunk_rows, max_sender_elements
        self._matches: list[np.ndarray] = []
        self._state, self._next = "new", 0

    @property
    def oprf_evaluations(self) -> int:
        """OPRF evaluations this run obtains (cuckoo bins): what a quota charges."""
        return derive(self._x.size, 1).bins

    @property
    def sender_size(self) -> int | None:
        return self._params.sender_size if self._state not in ("new", "hello") else None

    def start(self) -> Iterator[bytes]:
        """The Hello message; the cuckoo table is built after it is taken, while the
        agency runs its base OTs.

        Raises:
            ValueError: (while iterating) duplicate elements.
            ProtocolStateError: called twice.
        """
        if self._state != "new" or self._dead:
            raise ProtocolStateError("start() was already called")
        self._stage("base_ot")
        self._a, self._a_point = base_ot.sender_message(self._rb)
        self._state = "hello"
        hello = Hello(self._x.size, self.oprf_evaluations, self._chunk, self._a_point).to_bytes()
        self._pending = True
        return self._guard(self._after_hello(hello))

    def _after_hello(self, hello: bytes) -> Iterator[bytes]:
        yield hello
        self._stage("hashing")
        bins = self.oprf_evaluations
        for attempt in range(_REHASH_ATTEMPTS):
            # Nothing about the key has been sent yet, so a failed table is simply
            # rebuilt under a fresh one: the agency only ever sees the key that worked.
            self._key = self._rb(16)
            self._digests = element_digests(self._key, self._x)
            if attempt == 0 and has_duplicates(self._digests):
                raise ValueError("elements must be distinct")
            self._table = cuckoo.insert(cuckoo.candidate_bins(self._digests, bins), bins)
            if self._table is not None:
                return
        raise RuntimeError("cuckoo insertion kept failing")  # probability <= 2^-640

    def _dispatch(self, kind: int, message: bytes) -> Iterable[bytes]:
        if self._state == "hello" and kind == SETUP:
            return self._on_setup(Setup.from_bytes(message))
        if self._state == "values" and kind == VALUES:
            return self._on_values(message)
        raise ProtocolStateError("message of another round")

    def _on_setup(self, setup: Setup) -> Iterator[bytes]:
        n2 = setup.sender_size
        if not 1 <= n2 <= self._max_peer or not 1 <= setup.chunk_elements <= MAX_CHUNK_ELEMENTS:
            raise InvalidMessage()
        self._params = derive(self._x.size, n2)
        self._chunk_elements = setup.chunk_elements
        self._stage("base_ot")
        try:
            seeds0, seeds1 = base_ot.sender_seeds(self._a, self._a_point, setup.base_ot_replies,
                                                  len(setup.base_ot_replies) // 32)
        except base_ot.BaseOtError:
            raise InvalidMessage() from None
        del self._a
        ext = ExtensionReceiver(seeds0, seeds1, self._params.bins)
        self._state = "corrections"
        return self._corrections(ext, *session_keys(setup.session_seed))

    def _corrections(self, ext: ExtensionReceiver, code: Aes, pi: Aes) -> Iterator[bytes]:
        yield HashingKey(self._key).to_bytes()
        p, owner, function = self._params, self._table.owner, self._table.function
        self._values = np.empty((p.receiver_size, p.value_bytes), np.uint8)
        for index, lo in enumerate(range(0, p.bins, self._chunk)):
            self._stage("extension")
            owners = owner[lo:lo + self._chunk]
            placed = np.flatnonzero(owners >= 0)
            elements = owners[placed]
            codes = np.zeros((owners.size, WIDTH_BYTES), np.uint8)
            put_rows(codes, placed, code_words(code, take_rows(self._digests, elements)))
            u, t = ext.next_rows(codes)
            self._stage("oprf_hash")
            put_rows(self._values, elements,
                     ext.outputs(pi, take_rows(t, placed), function[elements], p.value_bytes))
            yield Correction(index, u).to_bytes()
        self._stage("matching")
        self._matcher = MatchTable(self._values, np.arange(p.receiver_size), function)
        del self._values, self._digests, self._table, self._key
        self._state = "values"

    def _on_values(self, message: bytes) -> Iterator[bytes]:
        p, size = self._params, self._chunk_elements
        count = min(size, p.sender_size - self._next * size)
        chunk = Values.from_bytes(message, self._next, count, p.value_bytes)
        self._stage("matching")
        for i in range(HASHES):
            found = self._matcher.lookup(chunk.values[:, i], i)
            if found.size:
                self._matches.append(found)
        self._next += 1
        if self._next * size >= p.sender_size:
            self.finished = True
            self._state = "done"
        return iter(())

    def result(self) -> np.ndarray:
        """Sorted indices (into the elements given) of the intersection.

        Raises:
            ProtocolStateError: the run has not finished.
        """
        if not self.finished:
            raise ProtocolStateError("the run has not finished")
        if not self._matches:
            return np.zeros(0, np.int64)
        # Each element has one value and the agency's values are distinct, so a repeat
        # needs two equal pseudorandom values; sort, and drop one if it ever happens
        # (np.unique's hashing is ~10x slower here).
        found = np.sort(np.concatenate(self._matches)).astype(np.int64)
        return found[np.concatenate([[True], found[1:] != found[:-1]])]
