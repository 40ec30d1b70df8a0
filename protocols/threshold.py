"""Private threshold checks with Paillier: "is income_i >= T_i?" for each applicant.

The agency holds a Paillier key (``phe``, n >= 3072 bits, g = n + 1) and publishes,
per epoch, Enc(income_j) for its rows (sealed as a labeled attribute, so the fund
centre obtains the ciphertexts of its matched applicants only). Per-epoch encryption
uses fixed-base randomness (below) with CRT, ~100x faster than ``phe``'s default.

Rounds for a batch of applicants (messages are bytes)::

    fund centre: for applicant i with c_i = Enc(v_i) and its private threshold T_i:
      s_i <- {+1, -1},  r_i <- log-uniform in [2^128, 2^1152),  r'_i <- [1, r_i)
      e_i = c_i^(s_i r_i) * g^(s_i (r'_i - r_i T_i)) * rho_i       (rho_i fresh n-th residue)
          = Enc(w_i),  w_i = s_i (r_i (v_i - T_i) + r'_i)
      add dummy entries up to ``batch_size``, shuffle        --ThresholdRequest-->
    agency: check key id, batch size, every ciphertext; decrypt w_i mod p only;
      refuse unless 2^64 <= |w_i| < 2^1217; sign bit [w_i > 0]  <--ThresholdResponse--
    fund centre: unshuffle, drop dummies, yes_i = ([w_i > 0] == [s_i = +1]).

Correctness: with d = v - T an integer and 1 <= r' < r, r d + r' > 0 iff d >= 0, so
the sign is exact (no failure probability). |w| < 2^(1152+64+1) < p/2, so w is read
from the residue mod p alone (half a Paillier decryption).

Who learns what.

* Fund centre: one bit per applicant, income >= threshold. It never holds the secret
  key; the ciphertexts it holds are semantically secure.
* Agency: the batch size (padded, so not the number of applicants), and per entry a
  sign and a magnitude. The sign is s_i XOR the answer with s_i a fair coin it never
  sees: exactly uniform and independent of everything else, so it reveals nothing.
  The magnitude: log2|w| = log2 r + log2(|d| +- u) with u in [0, 1) and log2 r uniform
  on an interval of width 1024, so for any two differences d1, d2 the distributions
  of what it sees are within statistical distance |log2|d1| - log2|d2|| / 1024
  (<= 65/1024 ~ 6% for the extreme pair |d| = 1 vs 2^64, ~1% for realistic incomes).
  r is log-uniform *within* each octave too: a uniform mantissa would leak the
  leading digits of |d|. Entries are unlinkable to rows: the exponent and the fresh
  rho hide c_i. Dummies differ from real entries only through that magnitude channel.
* The agency decrypts nothing else: wrong key id, a batch outside
  [min_batch, max_batch], an invalid ciphertext, or any w outside the window above
  (an honest w falls below 2^64 with probability <= 2^-64) refuses the whole batch.
  The window rejects unblinded values; it cannot stop a *malicious* fund centre that
  blinds with a known r from learning sign(v - T) for thresholds of its choice (that
  is the function itself: bisection needs ~40 entries per person), so per-epoch entry
  quotas belong to the node's policy and ledger.

Randomness. Paillier randomness r^n is h^alpha from fixed-base tables
(protocols/paillier_fast.py, re-exported here; ordinary Paillier ciphertexts,
decryptable by ``phe``). Blinds, signs, dummies and shuffles come from
``rng`` (a ``random.Random``) or the OS CSPRNG. The ``*_task`` functions are
picklable so a node can spread work through ``mapper``; they carry p or q to the
node's own workers.
"""

from __future__ import annotations

import decimal
import functools
import hashlib
import math
import random
import struct
from collections.abc import Callable, Iterable, Sequence

import gmpy2
import numpy as np
import phe

from protocols.session import ProtocolStateError
from protocols.paillier_fast import (  # noqa: F401  (re-exported)
    FixedBaseRandomizer, _width, encrypt_incomes_task, owner_randomizer, pack_ciphertexts,
    prepare_incomes,
)

__all__ = [
    "MIN_MODULUS_BITS", "ThresholdError", "InvalidPublicKey", "InvalidCiphertext",
    "BatchRefused", "ProtocolStateError", "validate_public_key", "validate_ciphertext",
    "key_id", "FixedBaseRandomizer", "prepare_incomes", "encrypt_incomes_task",
    "ThresholdRequest", "ThresholdResponse", "FundCentreThreshold", "AgencyThreshold",
    "pack_ciphertexts", "unpack_ciphertexts",
]

MIN_MODULUS_BITS = 3072
BLIND_MIN_BITS = 128
BLIND_OCTAVES = 1024
VALUE_BITS = 64  # |income - threshold| < 2^64
REFUSE_BELOW_BITS = 64
MAX_W_BITS = BLIND_MIN_BITS + BLIND_OCTAVES + VALUE_BITS + 1
_VERSION = 1
Mapper = Callable[..., Iterable]


class ThresholdError(ValueError):
    """Base error of the threshold protocol."""


class InvalidPublicKey(ThresholdError):
    """A peer's Paillier public key was refused."""


class InvalidCiphertext(ThresholdError):
    """A peer's ciphertext was refused (outside (0, n^2) or sharing a factor with n)."""

    def __init__(self, index: int | None = None) -> None:
        self.index = index
        super().__init__("invalid Paillier ciphertext" + ("" if index is None else f" (entry {index})"))

    def __reduce__(self):
        return (InvalidCiphertext, (self.index,))


class BatchRefused(ThresholdError):
    """The agency refused to decrypt a batch (size, key, or a non-protocol value)."""


@functools.cache
def _small_primes() -> int:
    """Product of the odd primes below 2^16 (one gcd screens a modulus for them)."""
    return math.prod(p for p in range(3, 1 << 16, 2) if gmpy2.is_prime(p))


def validate_public_key(n: int) -> phe.PaillierPublicKey:
    """Check a peer's modulus: >= 3072 bits, odd, not a square, no factor below 2^16.

    Raises:
        InvalidPublicKey: otherwise.
    """
    if not isinstance(n, int) or n.bit_length() < MIN_MODULUS_BITS:
        raise InvalidPublicKey(f"Paillier modulus must have at least {MIN_MODULUS_BITS} bits")
    if n % 2 == 0 or gmpy2.is_square(n) or gmpy2.gcd(n, _small_primes()) != 1:
        raise InvalidPublicKey("Paillier modulus is not an RSA modulus")
    return phe.PaillierPublicKey(n)


def validate_ciphertext(c: int, n: int, index: int | None = None) -> None:
    """0 < c < n^2 and gcd(c, n) = 1, else :class:`InvalidCiphertext`."""
    if not isinstance(c, int) or not 0 < c < n * n or gmpy2.gcd(c, n) != 1:
        raise InvalidCiphertext(index)


def key_id(n: int) -> bytes:
    """16-byte identifier of a public key (SHA-256 of its big-endian modulus)."""
    return hashlib.sha256(n.to_bytes((n.bit_length() + 7) // 8, "big")).digest()[:16]


def unpack_ciphertexts(packed: bytes, n: int) -> list[int]:
    """Inverse of :func:`pack_ciphertexts`; validates every ciphertext."""
    w = _width(n)
    if len(packed) % w:
        raise InvalidCiphertext()
    out = [int.from_bytes(packed[i:i + w], "big") for i in range(0, len(packed), w)]
    for i, c in enumerate(out):
        validate_ciphertext(c, n, i)
    return out


# --- messages -----------------------------------------------------------------------


class ThresholdRequest:
    """Fund centre -> agency: key id and the blinded batch (packed ciphertexts)."""

    __slots__ = ("key", "ciphertexts")

    def __init__(self, key: bytes, ciphertexts: bytes) -> None:
        self.key, self.ciphertexts = bytes(key), bytes(ciphertexts)

    def to_bytes(self) -> bytes:
        return bytes((_VERSION,)) + self.key + self.ciphertexts

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdRequest:
        data = bytes(data)
        if len(data) < 17 or data[0] != _VERSION:
            raise BatchRefused("malformed threshold request")
        return cls(data[1:17], data[17:])


class ThresholdResponse:
    """Agency -> fund centre: one sign bit per entry ([w > 0]), packed."""

    __slots__ = ("count", "bits")

    def __init__(self, count: int, bits: bytes) -> None:
        self.count, self.bits = count, bytes(bits)

    def signs(self) -> np.ndarray:
        if len(self.bits) != -(-self.count // 8):
            raise BatchRefused("malformed threshold response")
        return np.unpackbits(np.frombuffer(self.bits, np.uint8))[:self.count].astype(bool)

    def to_bytes(self) -> bytes:
        return bytes((_VERSION,)) + struct.pack(">I", self.count) + self.bits

    @classmethod
    def from_bytes(cls, data: bytes) -> ThresholdResponse:
        data = bytes(data)
        if len(data) < 5 or data[0] != _VERSION:
            raise BatchRefused("malformed threshold response")
        return cls(struct.unpack_from(">I", data, 1)[0], data[5:])


# --- the fund centre ----------------------------------------------------------------


def _log_uniform_blind(rng: random.Random) -> int:
    """r with log2 r uniform in [BLIND_MIN_BITS, BLIND_MIN_BITS + BLIND_OCTAVES)."""
    x = (BLIND_MIN_BITS << 64) + BLIND_OCTAVES * rng.getrandbits(64)  # 64 fraction bits
    octave, frac = x >> 64, x & ((1 << 64) - 1)
    with decimal.localcontext() as ctx:
        ctx.prec = 60
        mantissa = int(decimal.Decimal(2) ** (decimal.Decimal(frac) / (1 << 64)) * (1 << 127))
    mantissa = min(max(mantissa, 1 << 127), (1 << 128) - 1)
    low = octave - 127
    return (mantissa << low) | rng.getrandbits(low)


def blind_task(nsquare: int, items: Sequence[tuple[int, int, int]]) -> list[int]:
    """c^e * f mod n^2 for (c, e, f) (e may be negative): the online exponentiations."""
    ns = gmpy2.mpz(nsquare)
    return [int(gmpy2.powmod(c, e, ns) * f % ns) for c, e, f in items]


class FundCentreThreshold:
    """The asking side: ``request()`` then ``decide(response)``; single use.

    Args:
        public_key_n: the agency's modulus (validated here).
        applicants: (Enc(income) as int, threshold) per applicant, in the caller's order.
        batch_size: padded size; default the next power of two >= max(64, applicants).
    """

    def __init__(self, public_key_n: int, applicants: Sequence[tuple[int, int]], *,
                 batch_size: int | None = None, rng: random.Random | None = None,
                 mapper: Mapper = map, chunk: int = 64, exponent_bits: int = 256) -> None:
        self._pk = validate_public_key(public_key_n)
        n = self._pk.n
        for i, (c, threshold) in enumerate(applicants):
            validate_ciphertext(c, n, i)
            if not isinstance(threshold, int) or abs(threshold) >= 1 << (VALUE_BITS - 1):
                raise ValueError(f"threshold {i} must be an int below 2^63 in magnitude")
        if not applicants:
            raise ValueError("at least one applicant is needed")
        real = len(applicants)
        self._size = batch_size or max(64, 1 << (real - 1).bit_length())
        if self._size < real:
            raise ValueError("batch_size is smaller than the number of applicants")
        self._applicants = list(applicants)
        self._rng = rng or random.SystemRandom()
        self._mapper, self._chunk = mapper, chunk
        self._randomizer = FixedBaseRandomizer(n, exponent_bits=exponent_bits, rng=self._rng)
        self._slots: list[tuple[int, int]] | None = None  # (applicant index or -1, sign)

    def __repr__(self) -> str:
        return f"<FundCentreThreshold batch={self._size} blinds hidden>"

    def _dummy(self) -> tuple[int, int]:
        bits = self._rng.randrange(1, 33)
        d = self._rng.getrandbits(bits) | (1 << (bits - 1))
        return self._randomizer.encrypt(-d if self._rng.getrandbits(1) else d), 0

    def request(self) -> ThresholdRequest:
        if self._slots is not None:
            raise ProtocolStateError("request() was already sent")
        rng, n, ns = self._rng, self._pk.n, self._pk.nsquare
        entries = [(i, c, t) for i, (c, t) in enumerate(self._applicants)]
        entries += [(-1, *self._dummy()) for _ in range(self._size - len(entries))]
        rng.shuffle(entries)
        items, slots = [], []
        for index, c, threshold in entries:
            sign = -1 if rng.getrandbits(1) else 1
            r = _log_uniform_blind(rng)
            r2 = 1 + rng.randrange(r - 1)
            k = sign * (r2 - r * threshold) % n
            items.append((c, sign * r, (1 + k * n) * self._randomizer.sample() % ns))
            slots.append((index, sign))
        parts = [items[i:i + self._chunk] for i in range(0, len(items), self._chunk)]
        blinded = [c for part in self._mapper(blind_task, [ns] * len(parts), parts) for c in part]
        self._slots = slots
        return ThresholdRequest(key_id(n), pack_ciphertexts(blinded, n))

    def decide(self, response: ThresholdResponse) -> list[bool]:
        """yes/no per applicant (income >= threshold), in the order given.

        Raises:
            BatchRefused: the response has the wrong size or shape.
        """
        if self._slots is None or not self._slots:
            raise ProtocolStateError("decide() needs exactly one prior request()")
        slots, self._slots = self._slots, []
        if response.count != len(slots):
            raise BatchRefused("threshold response has the wrong number of entries")
        answers: list[bool | None] = [None] * len(self._applicants)
        for (index, sign), positive in zip(slots, response.signs()):
            if index >= 0:
                answers[index] = bool(positive) == (sign == 1)
        return answers  # type: ignore[return-value]


# --- the agency ---------------------------------------------------------------------


def sign_task(p: int, hp: int, ciphertexts: Sequence[int], offset: int = 0) -> list[bool]:
    """[w > 0] for each ciphertext from its residue mod p; refuses non-protocol values."""
    p, hp = gmpy2.mpz(p), gmpy2.mpz(hp)
    p2, half, lo, hi = p * p, p // 2, 1 << REFUSE_BELOW_BITS, 1 << MAX_W_BITS
    out = []
    for i, c in enumerate(ciphertexts):
        w = (gmpy2.powmod(c, p - 1, p2) - 1) // p * hp % p
        if w > half:
            w -= p
        if not lo <= abs(w) < hi:
            raise BatchRefused(f"entry {offset + i} is not a blinded protocol value; "
                               "the batch is refused")
        out.append(w > 0)
    return out


class AgencyThreshold:
    """The answering side: ``respond(request)`` per batch. Holds the private key."""

    def __init__(self, private_key: phe.PaillierPrivateKey, *, min_batch: int = 1,
                 max_batch: int = 4096, mapper: Mapper = map, chunk: int = 64) -> None:
        self._sk, self._n = private_key, private_key.public_key.n
        self._key = key_id(self._n)
        self.min_batch, self.max_batch = min_batch, max_batch
        self._mapper, self._chunk = mapper, chunk

    def __repr__(self) -> str:
        return "<AgencyThreshold private key hidden>"

    def __reduce__(self):
        raise TypeError("AgencyThreshold holds a private key; it is not picklable")

    def respond(self, request: ThresholdRequest) -> ThresholdResponse:
        """Raises:
            BatchRefused: another key, a size outside [min_batch, max_batch], or an
                entry outside the blinded-value window (nothing is returned).
            InvalidCiphertext: an entry outside (0, n^2) or sharing a factor with n.
        """
        if request.key != self._key:
            raise BatchRefused("request is for another public key")
        w = _width(self._n)
        count, rest = divmod(len(request.ciphertexts), w)
        if rest or not self.min_batch <= count <= self.max_batch:
            raise BatchRefused(f"batch size must be within [{self.min_batch}, {self.max_batch}]")
        cs = unpack_ciphertexts(request.ciphertexts, self._n)
        parts = [cs[i:i + self._chunk] for i in range(0, count, self._chunk)]
        k = len(parts)
        signs = [s for part in self._mapper(sign_task, [self._sk.p] * k, [self._sk.hp] * k,
                                            parts, [i * self._chunk for i in range(k)])
                 for s in part]
        return ThresholdResponse(count, np.packbits(np.array(signs, dtype=bool)).tobytes())
