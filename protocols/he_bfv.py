"""BFV plumbing of the aggregate protocol (protocols/he_aggregate.py), on TenSEAL.

Parameter checks against the HomomorphicEncryption.org 128-bit bounds, loading a peer's
public context (refused with a secret key inside), coefficient-encoded polynomials, and
the picklable batch tasks both parties spread over worker processes.
"""

from __future__ import annotations

import os
import random
from collections.abc import Sequence

import gmpy2
import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from protocols.he_messages import InvalidCiphertext, InvalidContext

__all__ = ["MAX_COEFF_MODULUS_BITS", "MIN_PLAIN_MODULUS_BITS", "check_parameters",
           "check_public_context", "encrypt_task", "select_and_sum_task"]

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
