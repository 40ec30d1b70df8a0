"""Messages of the aggregate protocol (protocols/he_aggregate.py) and its errors.

Every message is a versioned list of length-prefixed byte fields; parsing needs no
TenSEAL, and every parser refuses trailing bytes, short fields and malformed headers
with :class:`InvalidCiphertext`. Ciphertexts inside stay opaque bytes here: the
protocol loads and checks them against the context.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

from protocols.session import ProtocolStateError

__all__ = [
    "AggregateError", "InvalidContext", "InvalidCiphertext", "ProtocolStateError",
    "EncryptedColumns", "MaskedAggregates", "AggregateRelease", "GroupAggregate",
    "pack_column", "unpack_column",
]

_VERSION = 1

class AggregateError(ValueError):
    """Base error of the aggregate protocol."""


class InvalidContext(AggregateError):
    """A BFV context was refused (secret key inside, weak or unsupported parameters)."""


class InvalidCiphertext(AggregateError):
    """A ciphertext or message from the peer was malformed or inconsistent."""


def _pack(*fields: bytes) -> bytes:
    head = bytes((_VERSION,)) + struct.pack(">I", len(fields))
    return head + b"".join(struct.pack(">Q", len(f)) + bytes(f) for f in fields)


def _unpack(data: bytes) -> list[bytes]:
    data = bytes(data)
    try:
        if data[0] != _VERSION:
            raise ValueError
        (count,), off, fields = struct.unpack_from(">I", data, 1), 5, []
        for _ in range(count):
            (n,) = struct.unpack_from(">Q", data, off)
            if off + 8 + n > len(data):
                raise ValueError
            fields.append(data[off + 8:off + 8 + n])
            off += 8 + n
    except (ValueError, IndexError, struct.error):
        raise InvalidCiphertext("malformed aggregate message") from None
    if off != len(data):
        raise InvalidCiphertext("trailing bytes in aggregate message")
    return fields


def _json(data: bytes) -> dict:
    try:
        out = json.loads(bytes(data))
    except ValueError:
        raise InvalidCiphertext("malformed aggregate header") from None
    if not isinstance(out, dict):
        raise InvalidCiphertext("malformed aggregate header")
    return out


@dataclass(frozen=True)
class EncryptedColumns:
    """Agency -> fund centre. Ciphertexts in (group, quantity, block) order; quantity 0
    is the row indicator, 1..limbs the value limbs (present only if ``sums``)."""

    context: bytes
    rows: int
    group_names: tuple[str, ...]
    sums: bool
    limbs: int
    limb_bits: int
    ciphertexts: tuple[bytes, ...]

    def header_bytes(self) -> bytes:
        return json.dumps({"rows": self.rows, "groups": list(self.group_names),
                           "sums": self.sums, "limbs": self.limbs,
                           "limb_bits": self.limb_bits}).encode()

    def to_bytes(self) -> bytes:
        return _pack(self.header_bytes(), self.context, *self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> EncryptedColumns:
        fields = _unpack(data)
        if len(fields) < 2:
            raise InvalidCiphertext("malformed encrypted columns")
        h = _json(fields[0])
        try:
            return cls(fields[1], int(h["rows"]), tuple(str(g) for g in h["groups"]),
                       bool(h["sums"]), int(h["limbs"]), int(h["limb_bits"]), tuple(fields[2:]))
        except (KeyError, TypeError, ValueError):
            raise InvalidCiphertext("malformed encrypted columns header") from None


def pack_column(ciphertexts: Sequence[bytes]) -> bytes:
    """One streamed column (its block ciphertexts) as bytes; see ``offer_columns``."""
    return _pack(*ciphertexts)


def unpack_column(data: bytes) -> list[bytes]:
    return _unpack(data)


@dataclass(frozen=True)
class MaskedAggregates:
    """Fund centre -> agency: one masked ciphertext per (group, quantity)."""

    ciphertexts: tuple[bytes, ...]

    def to_bytes(self) -> bytes:
        return _pack(*self.ciphertexts)

    @classmethod
    def from_bytes(cls, data: bytes) -> MaskedAggregates:
        return cls(tuple(_unpack(data)))


@dataclass(frozen=True)
class AggregateRelease:
    """Agency -> fund centre: per group None (suppressed) or (noisy count + nu, masked
    noisy limb sums), and the epsilon charged for the query."""

    groups: tuple[tuple[int, tuple[int, ...]] | None, ...]
    epsilon: Fraction

    def to_bytes(self) -> bytes:
        body = {"groups": [None if g is None else [g[0], list(g[1])] for g in self.groups],
                "epsilon": str(self.epsilon)}
        return _pack(json.dumps(body).encode())

    @classmethod
    def from_bytes(cls, data: bytes) -> AggregateRelease:
        fields = _unpack(data)
        if len(fields) != 1:
            raise InvalidCiphertext("malformed aggregate release")
        body = _json(fields[0])
        try:
            groups = tuple(None if g is None else (int(g[0]), tuple(int(s) for s in g[1]))
                           for g in body["groups"])
            return cls(groups, Fraction(body["epsilon"]))
        except (KeyError, TypeError, ValueError, IndexError, ZeroDivisionError):
            raise InvalidCiphertext("malformed aggregate release") from None


@dataclass(frozen=True)
class GroupAggregate:
    """The fund centre's result for one group; all None when suppressed."""

    name: str
    suppressed: bool
    count: int | None = None
    total: int | None = None
    mean: float | None = None
