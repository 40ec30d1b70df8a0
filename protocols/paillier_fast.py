"""Paillier encryption with fixed-base randomness, for the key owner's bulk encryption.

Paillier randomness r^n is produced as h^alpha with h = (-x^2)^n mod n^2 fixed and
alpha a fresh 256-bit exponent, with fixed-base tables (Damgard, Jurik and Nielsen,
"A generalization of Paillier's public-key system with applications to electronic
voting", IJIS 2010, the "h^alpha" variant; short alpha relies on the short-exponent
indistinguishability assumption; ``exponent_bits=n_bits//2`` gives their standard
variant at ~6x the cost). With the factors, tables are kept mod p^2 and q^2 and joined
by CRT. Ciphertexts are ordinary Paillier ciphertexts (g = n + 1), decryptable by
``phe``, packed at a fixed width. Used by protocols/threshold.py; the ``*_task``
functions are picklable so the key owner can spread them over its own workers.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence

import gmpy2
import phe

__all__ = ["FixedBaseRandomizer", "owner_randomizer", "encrypt_incomes_task",
           "prepare_incomes", "pack_ciphertexts", "OWNER_WINDOW"]

Mapper = Callable[..., Iterable]


def _width(n: int) -> int:
    return 2 * ((n.bit_length() + 7) // 8)


def pack_ciphertexts(cs: Iterable[int], n: int) -> bytes:
    """Fixed-width big-endian encoding (2 * bytes(n) each), e.g. for labeled attributes."""
    w = _width(n)
    return b"".join(int(c).to_bytes(w, "big") for c in cs)


class FixedBaseRandomizer:
    """Paillier randomness h^alpha mod n^2 from fixed-base tables; see module docstring.

    With the factors (the key owner) tables are kept mod p^2 and q^2 and results
    joined by CRT (about 4x cheaper than mod n^2).
    """

    def __init__(self, n: int, *, p: int | None = None, q: int | None = None,
                 exponent_bits: int = 256, window: int = 8,
                 rng: random.Random | None = None) -> None:
        self._rng = rng or random.SystemRandom()
        self.n, self.nsquare = gmpy2.mpz(n), gmpy2.mpz(n) * n
        self._bits, self._w = exponent_bits, window
        x = gmpy2.mpz(1 + self._rng.randrange(n - 1))
        h = gmpy2.powmod(-x * x % self.n, self.n, self.nsquare)  # in the n-th residues
        if p is not None and q is not None:
            p2, q2 = gmpy2.mpz(p) ** 2, gmpy2.mpz(q) ** 2
            self._mods = (p2, q2)
            self._crt = (q2, gmpy2.invert(q2, p2))
        else:
            self._mods, self._crt = (self.nsquare,), None
        self._tables = [self._table(h % m, m) for m in self._mods]

    def _table(self, base, mod) -> list[list]:
        tables, w = [], self._w
        for _ in range(-(-self._bits // w)):
            row = [gmpy2.mpz(1)]
            for _ in range((1 << w) - 1):
                row.append(row[-1] * base % mod)
            tables.append(row)
            base = row[-1] * base % mod  # base^(2^w)
        return tables

    def _power(self, alpha: int, k: int):
        mod, table, w, mask = self._mods[k], self._tables[k], self._w, (1 << self._w) - 1
        acc = gmpy2.mpz(1)
        for row in table:
            digit = alpha & mask
            if digit:
                acc = acc * row[digit] % mod
            alpha >>= w
        return acc

    def _join(self, parts):
        if self._crt is None:
            return parts[0]
        q2, q2_inv = self._crt
        return parts[1] + q2 * ((parts[0] - parts[1]) * q2_inv % self._mods[0])

    def sample(self) -> int:
        """A fresh n-th residue mod n^2 (the r^n factor of a ciphertext)."""
        alpha = self._rng.getrandbits(self._bits)
        return int(self._join([self._power(alpha, k) for k in range(len(self._mods))]))

    def encrypt(self, m: int) -> int:
        """Enc(m) = (1 + m n) * h^alpha mod n^2, with m taken mod n (negatives allowed)."""
        alpha, nude = self._rng.getrandbits(self._bits), 1 + (m % self.n) * self.n
        parts = [nude * self._power(alpha, k) % mod for k, mod in enumerate(self._mods)]
        return int(self._join(parts))


#: Window of the key owner's tables: 22 multiplications per exponent mod p^2 and q^2
#: (32 with 8), for ~70 MB of tables built once per process and key (~0.5 s).
OWNER_WINDOW = 12
_owner_randomizers: dict[tuple[int, int], FixedBaseRandomizer] = {}


def owner_randomizer(n: int, p: int, q: int, exponent_bits: int = 256) -> FixedBaseRandomizer:
    """The key owner's randomizer for ``n``, built once per process and kept for the next
    chunk of the same key (a process keeps one key's tables at a time)."""
    found = _owner_randomizers.get((n, exponent_bits))
    if found is None:
        found = FixedBaseRandomizer(n, p=p, q=q, exponent_bits=exponent_bits, window=OWNER_WINDOW)
        _owner_randomizers.clear()
        _owner_randomizers[(n, exponent_bits)] = found
    return found


def encrypt_incomes_task(n: int, p: int, q: int, values: Sequence[int],
                         exponent_bits: int = 256) -> bytes:
    """Packed Enc(v) for a chunk of rows (the agency's per-epoch preparation)."""
    randomizer = owner_randomizer(n, p, q, exponent_bits)
    return pack_ciphertexts((randomizer.encrypt(int(v)) for v in values), n)


def prepare_incomes(private_key: phe.PaillierPrivateKey, incomes: Sequence[int], *,
                    mapper: Mapper = map, chunk: int = 2048, exponent_bits: int = 256) -> bytes:
    """Packed Enc(income_j) for every row, in dataset order (tables built once per worker)."""
    n, p, q = private_key.public_key.n, private_key.p, private_key.q
    parts = [list(incomes[i:i + chunk]) for i in range(0, len(incomes), chunk)]
    k = len(parts)
    return b"".join(mapper(encrypt_incomes_task, [n] * k, [p] * k, [q] * k, parts,
                           [exponent_bits] * k))
