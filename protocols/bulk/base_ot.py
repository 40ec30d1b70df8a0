"""Base oblivious transfers: Chou–Orlandi "simplest OT" over ristretto255, batched.

Chou and Orlandi, "The Simplest Protocol for Oblivious Transfer", LATINCRYPT 2015,
in its random-OT form, run ``w`` times in parallel with one first message. Every
group operation is libsodium's (``rbcl``, through :mod:`protocols.group`); this
module only wires them and derives keys with SHA-256.

Roles are the reverse of the PSI's (as in every IKNP-style extension): the fund
centre, who will be the extension *receiver*, is the base-OT *sender* and gets two
seeds per OT; the agency, the extension sender, is the base-OT *receiver* and gets
one seed per OT, chosen by its secret bit ``s_i``::

    base-OT sender (fund centre)               base-OT receiver (agency), bits s_i
    a <- Z_L*, A = a*G           --- A --->    check A; b_i <- Z_L*
                                               B_i = b_i*G + s_i*A
                                 <-- B_1..B_w  k_i = KDF(i, A, B_i, b_i*A)
    check every B_i
    k_i^0 = KDF(i, A, B_i, a*B_i)
    k_i^1 = KDF(i, A, B_i, a*B_i - a*A)

``k_i^{s_i}`` is the agency's key; the other key needs the CDH of ``(A, B_i - A)``
or ``(A, B_i)``. ``B_i`` is uniform whatever ``s_i`` is, so the fund centre learns
nothing about ``s``. KDF = SHA-256 over a domain tag, the index and the whole
transcript of that OT (A, B_i), truncated to an AES-128 seed: hashing the
transcript in is the fix Hauck and Loss ("Efficient and Universally Composable
Protocols for Oblivious Transfer from the CDH Assumption", 2017) and Genç, Iovino
and Rial (2017) give for the published key derivation. Semi-honest security is
what the bulk PSI needs and what is claimed here.

Randomness comes only from the ``random_bytes`` callable passed in (scalars are 64
random bytes reduced mod L), so known-answer tests can drive it.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

import rbcl

from protocols import group

__all__ = ["DST", "SEED_LEN", "BaseOtError", "random_scalar", "sender_message", "receiver_choose", "sender_seeds"]

DST = b"shuqiao/bulk/v1/base-ot/chou-orlandi-ristretto255"
SEED_LEN = 16

RandomBytes = Callable[[int], bytes]


class BaseOtError(ValueError):
    """A peer's base-OT message did not decode to valid group elements."""


def random_scalar(random_bytes: RandomBytes) -> bytes:
    """A uniformly random non-zero scalar from 64 injected random bytes."""
    while True:
        s = rbcl.crypto_core_ristretto255_scalar_reduce(random_bytes(64))
        if group.is_nonzero_scalar(s):
            return s


def _kdf(index: int, a_point: bytes, b_point: bytes, shared: bytes) -> bytes:
    h = hashlib.sha256(DST)
    h.update(struct.pack("<I", index))
    h.update(a_point)
    h.update(b_point)
    h.update(shared)
    return h.digest()[:SEED_LEN]


def sender_message(random_bytes: RandomBytes) -> tuple[bytes, bytes]:
    """The base-OT sender's secret scalar ``a`` and first message ``A = a*G``."""
    a = random_scalar(random_bytes)
    return a, group.base_mul(a)


def receiver_choose(a_point: bytes, choices: Sequence[int],
                    random_bytes: RandomBytes) -> tuple[bytes, list[bytes]]:
    """The receiver's reply (packed ``B_i``) and its seeds ``k_i^{s_i}``.

    Raises:
        BaseOtError: ``A`` is not a valid non-identity element.
    """
    if not group.is_valid_element(a_point):
        raise BaseOtError("invalid base-OT first message")
    replies, seeds = [], []
    for i, bit in enumerate(choices):
        b = random_scalar(random_bytes)
        b_point = group.base_mul(b)
        with_a = group.add(b_point, a_point)
        # Both candidates are computed so the work does not depend on the bit.
        b_point = with_a if bit else b_point
        replies.append(b_point)
        seeds.append(_kdf(i, a_point, b_point, group.element_mul(b, a_point)))
    return b"".join(replies), seeds


def sender_seeds(a: bytes, a_point: bytes, packed: bytes,
                 count: int) -> tuple[list[bytes], list[bytes]]:
    """The sender's two seeds per OT from the receiver's packed ``B_i``.

    Raises:
        BaseOtError: wrong length, or any ``B_i`` is not a valid non-identity element.
    """
    try:
        points = group.split_elements(packed, count)
    except ValueError:
        raise BaseOtError("invalid base-OT reply") from None
    a_a = group.element_mul(a, a_point)
    seeds0, seeds1 = [], []
    for i, b_point in enumerate(points):
        if not group.is_valid_element(b_point):
            raise BaseOtError("invalid base-OT reply")
        shared0 = group.element_mul(a, b_point)
        shared1 = rbcl.crypto_core_ristretto255_sub(shared0, a_a)
        seeds0.append(_kdf(i, a_point, b_point, shared0))
        seeds1.append(_kdf(i, a_point, b_point, shared1))
    return seeds0, seeds1
