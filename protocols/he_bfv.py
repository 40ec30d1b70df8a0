"""BFV plumbing of the aggregate protocol (protocols/he_aggregate.py), on TenSEAL, and the
protocol's messages and errors.

Parameter checks against the HomomorphicEncryption.org 128-bit bounds, loading a peer's
public context (refused with a secret key inside), coefficient-encoded polynomials, and
the picklable batch tasks both parties spread over worker processes.

Every message is a versioned list of length-prefixed byte fields; parsing calls no
TenSEAL, and every parser refuses trailing bytes, short fields and malformed headers
with :class:`InvalidCiphertext`. Ciphertexts inside stay opaque bytes here: the
protocol loads and checks them against the context.
"""

from __future__ import annotations

import json
import os
import random
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction

import gmpy2
import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from protocols.session import ProtocolStateError

__all__ = ["MAX_COEFF_MODULUS_BITS", "MIN_PLAIN_MODULUS_BITS", "check_parameters",
           "check_public_context", "encrypt_task", "select_and_sum_task", "AggregateError",
           "InvalidContext", "InvalidCiphertext", "ProtocolStateError", "EncryptedColumns",
           "MaskedAggregates", "AggregateRelease", "GroupAggregate", "pack_column",
           "unpack_column"]

# --- messages and errors ------------------------------------------------------------

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


#: Max total coefficient-modulus bits for 128-bit security (HE standard, ternary secret).
MAX_COEFF_MODULUS_BITS = {4096: 109, 8192: 218, 16384: 438, 32768: 881}
MIN_PLAIN_MODULUS_BITS = 50  # keeps the flood >= 2^40 x the selection-dependent noise


# --- parameters and contexts --------------------------------------------------------


def check_parameters(poly_modulus_degree: int, coeff_modulus_bits: Sequence[int],
                     plain_modulus: int) -> None:
    """Refuse BFV parameters below 128-bit security or unfit for this protocol.

    Raises:
        InvalidContext: the degree is not in the standard's table (4096..32768), the
            total coefficient-modulus bits exceed its bound, or t is not a batching
            prime (t = 1 mod 2n) of at least MIN_PLAIN_MODULUS_BITS bits.
    """
    bound = MAX_COEFF_MODULUS_BITS.get(poly_modulus_degree)
    if bound is None:
        raise InvalidContext(f"poly_modulus_degree {poly_modulus_degree} is not allowed "
                             f"(allowed: {sorted(MAX_COEFF_MODULUS_BITS)})")
    total = sum(coeff_modulus_bits)
    if total > bound:
        raise InvalidContext(f"coefficient modulus of {total} bits exceeds {bound} bits, "
                             f"the 128-bit bound for n={poly_modulus_degree}")
    if (plain_modulus.bit_length() < MIN_PLAIN_MODULUS_BITS or not gmpy2.is_prime(plain_modulus)
            or plain_modulus % (2 * poly_modulus_degree) != 1):
        raise InvalidContext("plain modulus must be a batching prime of >= "
                             f"{MIN_PLAIN_MODULUS_BITS} bits")


def _parms(ctx: ts.Context) -> tuple[int, list[int], int]:
    parms = ctx.seal_context().data.key_context_data().parms()
    return (parms.poly_modulus_degree(), [m.bit_count() for m in parms.coeff_modulus()],
            parms.plain_modulus().value())


def check_public_context(data: bytes) -> ts.Context:
    """Load a peer's serialised context; refuse one with a secret key or weak parameters.

    Raises:
        InvalidContext: not a BFV TenSEAL context, carries a secret key, has no public
            key, or fails :func:`check_parameters`.
    """
    try:
        ctx = ts.context_from(bytes(data), n_threads=1)
        parms = ctx.seal_context().data.key_context_data().parms()
        scheme = str(parms.scheme())
    except Exception:  # TenSEAL raises assorted types for garbage
        raise InvalidContext("not a serialised TenSEAL context") from None
    if ctx.has_secret_key() or ctx.is_private():
        raise InvalidContext("refused: the context carries a secret key")
    if not ctx.has_public_key() or not scheme.endswith("BFV"):
        raise InvalidContext("refused: not a BFV context with a public key")
    check_parameters(*_parms(ctx))
    return ctx


_SUFFIX = [""] + [f"x^{i}" for i in range(1, 32768)]


def _poly_slots(encoder, positions: Sequence[int], values: Sequence[int]) -> list[int]:
    """Slot vector whose batch encoding is the polynomial sum values[k] X^positions[k]."""
    terms = [f"{v:X}{_SUFFIX[i]}" for i, v in zip(positions, values) if v]
    poly = " + ".join(reversed(terms)) if terms else "0"
    return encoder.decode_int64(sealapi.Plaintext(poly))


def _encoder(ctx: ts.Context):
    return sealapi.BatchEncoder(ctx.seal_context().data)


def _load_vector(ctx: ts.Context, data: bytes, n: int):
    try:
        vec = ts.bfv_vector_from(ctx, bytes(data))
        cts = vec.ciphertext()
    except Exception:
        raise InvalidCiphertext("not a serialised BFV vector for this context") from None
    if vec.size() != n or len(cts) != 1 or cts[0].size() != 2:
        raise InvalidCiphertext("ciphertext shape does not match the protocol")
    return vec


# --- picklable batch tasks (for a process pool through ``mapper``) ------------------


def encrypt_task(public_context: bytes, blocks: Sequence[tuple[Sequence[int], Sequence[int]]]
                 ) -> list[bytes]:
    """Encrypt polynomials given as (positions, coefficients) under a public context."""
    ctx = ts.context_from(public_context, n_threads=1)
    enc = _encoder(ctx)
    return [ts.bfv_vector(ctx, _poly_slots(enc, pos, val)).serialize() for pos, val in blocks]


def _selectors(encoder, bits: np.ndarray, n: int, t: int) -> list[list[int] | None]:
    """Per block c, the slots of Q_c = sel_c0 - sum_i sel_ci X^(n-i) (None if empty)."""
    out: list[list[int] | None] = []
    for c in range(-(-len(bits) // n)):
        idx = np.flatnonzero(bits[c * n:(c + 1) * n]).tolist()
        pos = sorted((n - i) % n for i in idx)  # X^-i = -X^(n-i); X^0 stays +1
        out.append(_poly_slots(encoder, pos, [1 if p == 0 else t - 1 for p in pos])
                   if pos else None)
    return out


def select_and_sum_task(public_context: bytes, packed_selection: bytes, rows: int,
                        columns: Sequence[Sequence[bytes]]) -> list[bytes]:
    """For each column (one ciphertext per block): sum_c ct_c * Q_c, serialised.

    Every ciphertext is loaded and checked, even in blocks with nothing selected.
    """
    ctx = ts.context_from(public_context, n_threads=1)
    n, _, t = _parms(ctx)
    bits = np.unpackbits(np.frombuffer(packed_selection, np.uint8), count=rows).astype(bool)
    selectors = [None if sel is None else ts.plain_tensor(sel, dtype="int")
                 for sel in _selectors(_encoder(ctx), bits, n, t)]  # converted once, reused
    out = []
    for column in columns:
        acc = None
        for sel, data in zip(selectors, column, strict=True):
            vec = _load_vector(ctx, data, n)
            if sel is not None:
                vec.mul_(sel)
                acc = vec if acc is None else acc.add_(vec)
        out.append((acc or ts.bfv_vector(ctx, [0] * n)).serialize())
    return out


def _exact_sum(values: np.ndarray) -> int:
    """Sum of non-negative int64 values < 2^62 without int64 overflow (N < 2^31)."""
    return (int((values >> 31).sum()) << 31) + int((values & (2**31 - 1)).sum())


def _centered(x: int, t: int) -> int:
    x %= t
    return x - t if x > t // 2 else x


def _uniform_mod(t: int, count: int, rng: random.Random | None) -> np.ndarray:
    """``count`` uniform integers in [0, t) by rejection (t < 2^63), as int64."""
    bits, out = t.bit_length(), np.empty(0, dtype=np.int64)
    while len(out) < count:
        want = 2 * (count - len(out)) + 16
        raw = os.urandom(8 * want) if rng is None else rng.randbytes(8 * want)
        draw = (np.frombuffer(raw, "<u8") >> np.uint64(64 - bits)).astype(np.int64)
        out = np.concatenate([out, draw[draw < t]])
    return out[:count]
