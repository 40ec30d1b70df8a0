"""Wire messages of the bulk PSI: one type per round, fixed layouts, strict parsing.

Every message starts with ``version (1 byte) || type (1 byte)``; integers are
little-endian. The two big rounds are split into chunks so that a transport can
move them one at a time with bounded memory::

    1 Hello       fund centre -> agency   n1, bins, rows per correction chunk,
                                          base-OT A (32)
    2 Setup       agency -> fund centre   n2, elements per value chunk,
                                          session seed (32), base-OT B_1..B_512 (32 each)
    5 HashingKey  fund centre -> agency   the element-hashing key (16), once the fund
                                          centre's cuckoo table is built under it
    3 Correction  fund centre -> agency   chunk index, rows x 64 bytes of u
    4 Values      agency -> fund centre   chunk index, elements x 3 x value_bytes

A chunk's index must be the next one expected and its length exactly what the
parameters imply: the receiving session checks both (:mod:`.session`). Parsing
never trusts a length field to size an allocation: sizes come from the parameters.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import numpy as np

from ..session import ProtocolStateError  # the one wrong-round error, shared by every protocol
from .params import WIDTH, WIDTH_BYTES

__all__ = [
    "VERSION", "InvalidMessage", "ProtocolStateError", "Hello", "Setup", "HashingKey",
    "Correction", "Values", "message_type",
]

VERSION = 1
HELLO, SETUP, CORRECTION, VALUES, HASHING_KEY = 1, 2, 3, 4, 5
_ELEMENT = 32


class InvalidMessage(ValueError):
    """A peer's message was malformed or inconsistent. Deliberately opaque."""

    def __init__(self) -> None:
        super().__init__("invalid bulk PSI message from peer")


def message_type(data: bytes) -> int:
    """The type byte of a well-versioned message.

    Raises:
        InvalidMessage: too short, or another protocol version.
    """
    if len(data) < 2 or data[0] != VERSION or not HELLO <= data[1] <= HASHING_KEY:
        raise InvalidMessage()
    return data[1]


@dataclass(frozen=True)
class Hello:
    receiver_size: int
    bins: int
    chunk_rows: int
    base_ot_point: bytes

    _FMT = struct.Struct("<BBQQI32s")

    def to_bytes(self) -> bytes:
        return self._FMT.pack(VERSION, HELLO, self.receiver_size, self.bins, self.chunk_rows,
                              self.base_ot_point)

    @classmethod
    def from_bytes(cls, data: bytes) -> Hello:
        if message_type(data) != HELLO or len(data) != cls._FMT.size:
            raise InvalidMessage()
        _, _, n1, bins, chunk, point = cls._FMT.unpack(data)
        return cls(n1, bins, chunk, point)


@dataclass(frozen=True)
class Setup:
    sender_size: int
    chunk_elements: int
    session_seed: bytes
    base_ot_replies: bytes  # WIDTH packed elements

    _FMT = struct.Struct("<BBQI32s")

    def to_bytes(self) -> bytes:
        return self._FMT.pack(VERSION, SETUP, self.sender_size, self.chunk_elements,
                              self.session_seed) + self.base_ot_replies

    @classmethod
    def from_bytes(cls, data: bytes) -> Setup:
        if message_type(data) != SETUP or len(data) != cls._FMT.size + WIDTH * _ELEMENT:
            raise InvalidMessage()
        _, _, n2, chunk, seed = cls._FMT.unpack_from(data)
        return cls(n2, chunk, seed, bytes(data[cls._FMT.size:]))


@dataclass(frozen=True)
class HashingKey:
    key: bytes

    _FMT = struct.Struct("<BB16s")

    def to_bytes(self) -> bytes:
        return self._FMT.pack(VERSION, HASHING_KEY, self.key)

    @classmethod
    def from_bytes(cls, data: bytes) -> HashingKey:
        if message_type(data) != HASHING_KEY or len(data) != cls._FMT.size:
            raise InvalidMessage()
        return cls(cls._FMT.unpack(data)[2])


_CHUNK = struct.Struct("<BBI")


def _chunk_bytes(kind: int, index: int, payload: np.ndarray) -> bytes:
    return _CHUNK.pack(VERSION, kind, index) + np.ascontiguousarray(payload).tobytes()


def _chunk_parse(kind: int, data: bytes, expected_index: int, payload_len: int) -> memoryview:
    if message_type(data) != kind or len(data) != _CHUNK.size + payload_len:
        raise InvalidMessage()
    if _CHUNK.unpack_from(data)[2] != expected_index:
        raise InvalidMessage()
    return memoryview(data)[_CHUNK.size:]


@dataclass(frozen=True)
class Correction:
    index: int
    rows: np.ndarray  # (c, 64) uint8

    def to_bytes(self) -> bytes:
        return _chunk_bytes(CORRECTION, self.index, self.rows)

    @classmethod
    def from_bytes(cls, data: bytes, expected_index: int, rows: int) -> Correction:
        """Parse chunk ``expected_index``, which must hold exactly ``rows`` rows."""
        body = _chunk_parse(CORRECTION, data, expected_index, rows * WIDTH_BYTES)
        return cls(expected_index, np.frombuffer(body, np.uint8).reshape(rows, WIDTH_BYTES))


@dataclass(frozen=True)
class Values:
    index: int
    values: np.ndarray  # (c, 3, value_bytes) uint8

    def to_bytes(self) -> bytes:
        return _chunk_bytes(VALUES, self.index, self.values)

    @classmethod
    def from_bytes(cls, data: bytes, expected_index: int, elements: int,
                   value_bytes: int) -> Values:
        """Parse chunk ``expected_index`` of exactly ``elements`` elements."""
        body = _chunk_parse(VALUES, data, expected_index, elements * 3 * value_bytes)
        return cls(expected_index, np.frombuffer(body, np.uint8).reshape(elements, 3, value_bytes))
