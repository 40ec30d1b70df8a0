"""Private grouped aggregates (count, sum, mean) over a shuffled match, with BFV (TenSEAL).

The agency's values never leave it in the clear; the fund centre selects and adds them
under the agency's BFV key; the agency decrypts only masked totals, adds discrete
Laplace noise (OpenDP), suppresses small groups and releases.

Rounds (after :mod:`protocols.psi_shuffle` gave the fund centre a selection ``sel``
over the agency's shuffled rows, and the agency its permutation ``pi``)::

    agency                                             fund centre
    BFV keys; per group g, per quantity q (the row
    indicator [g_j = g], and the value limbs), per
    block c of n rows: Enc(poly with coefficient i
    = quantity of shuffled row c*n+i)  --EncryptedColumns-->
                                                       check context (no secret key,
                                                       128-bit bound), every ciphertext
                                                       R_gq = sum_c Enc_gqc * Q_c
                                                            + rho*Enc(0) + Enc(0) + mu_gq
                                      <--MaskedAggregates--
    check, charge epsilon, decrypt the constant
    coefficient: count y_g = C_g + nu_g, sums S + M;
    noise; suppress if the noisy count < k
                                       --AggregateRelease-->  subtract nu, M: results

Why coefficient encoding. ``Q_c = sel_c0 - sum_i sel_ci X^(n-i)`` has coefficients in
{0, -1, 1}; in Z[X]/(X^n+1) the constant coefficient of ``m_c * Q_c`` is exactly
``sum_i v_ci sel_ci``. A 0/1 mask multiplied slot-wise (batching) would instead be a
plaintext with coefficients of size t, and BFV is not circuit-private: the decryption
noise of the result, which the key-holding agency can compute, would be ~t*n times a
function of ``sel`` — for a single block the agency could solve for ``sel``. With
{0, +-1} multipliers the selection step grows the noise by only ~8 bits (measured with
SEAL's invariant noise budget: 111 -> 103 bits for t = 2^55), and the fund centre then
adds ``rho * Enc_pk(0)`` for a uniform plaintext rho (noise of size ~t*2^15, a further
~52 bits, i.e. ~2^52 times the selection-dependent part) and a fresh ``Enc_pk(0)`` (so
the ciphertext's c1 component no longer reveals the linear combination). This flood is
a heuristic argument, not a proof (TenSEAL exposes neither modulus switching nor
arbitrary flooding noise for serialisable vectors). The mask ``mu`` is a uniform
polynomial, so every coefficient the agency decrypts is uniform except the constant
one; the agency reads it as ``n^-1 * (sum of slots) mod t``.

Parameters. n = 8192, coefficient modulus 4 x 50 bits (200 <= 218, the
HomomorphicEncryption.org bound for 128-bit security, Albrecht et al. 2018, table 1),
plain modulus t a 55-bit batching prime. Sums are exact mod t; the agency makes them
exact over Z by splitting values into L base-2^w limbs whenever a column total could
reach t/4 (one limb up to ~9e15, so totals of 1e12 never need two), and by keeping
|noise| < t/4 (tail probability 2^-64). Limb sums are recombined with Python ints.
A 55-bit t leaves 27 bits of noise budget after the flood.

Who learns what (semi-honest parties).

* Fund centre: N, the group names, L (a coarse bound on column totals), and per group
  either "suppressed" or noisy count, noisy sum, their ratio. From the match it also
  knows the exact total intersection size (see psi_shuffle); DP covers the per-group
  split, not that total. It holds no secret key (checked) and never a single value.
* Agency: m and, per group, ``C_g + nu_g`` where nu_g is the fund centre's own
  discrete Laplace noise (``count_epsilon``; None gives the agency exact counts). It
  needs these to suppress small groups. Everything else it decrypts is uniformly masked.
* A malicious fund centre could scale or single out ciphertexts before the agency
  decrypts (the agency cannot check the homomorphic computation), or lie about nu to
  defeat suppression; that is outside the semi-honest model and left to the ledger.

Randomness: SEAL's own for keys and encryption; ``rng`` (``random.Random``) or the OS
CSPRNG for the fund centre's masks; OpenDP for noise (not seedable: tests inject a
``mechanism``). The ``*_task`` functions take bytes and are picklable for ``mapper``.

Streaming: ``offer_columns`` / ``evaluate_columns`` send and consume one (group,
quantity) column at a time, so neither side holds all ciphertexts (about 0.6 GB at a
million rows and 6 groups). Messages and errors, BFV parameters, context checks and
batch tasks live in protocols/he_bfv.py; they are re-exported.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator, Sequence
from fractions import Fraction

import numpy as np
import tenseal as ts
import tenseal.sealapi as sealapi

from protocols.dp import BudgetExhausted, DiscreteLaplace, EpsilonBudget, _fraction  # noqa: F401
from protocols.he_bfv import (  # noqa: F401  (re-exported: one import for callers)
    MAX_COEFF_MODULUS_BITS, MIN_PLAIN_MODULUS_BITS, _centered, _exact_sum, _load_vector,
    _parms, _uniform_mod, check_parameters, check_public_context, encrypt_task,
    select_and_sum_task, AggregateError, AggregateRelease, EncryptedColumns, GroupAggregate,
    InvalidCiphertext, InvalidContext, MaskedAggregates, ProtocolStateError, pack_column,
    unpack_column,
)

__all__ = [
    "POLY_MODULUS_DEGREE", "PLAIN_MODULUS_BITS", "COEFF_MOD_BIT_SIZES", "MAX_COEFF_MODULUS_BITS",
    "AggregateError", "InvalidContext", "InvalidCiphertext", "BudgetExhausted",
    "ProtocolStateError", "check_parameters", "check_public_context", "EpsilonBudget",
    "DiscreteLaplace", "EncryptedColumns", "MaskedAggregates", "AggregateRelease",
    "GroupAggregate", "AgencyAggregator", "FundCentreAggregator", "encrypt_task",
    "select_and_sum_task", "pack_column", "unpack_column",
]

POLY_MODULUS_DEGREE = 8192
PLAIN_MODULUS_BITS = 55
COEFF_MOD_BIT_SIZES = (50, 50, 50, 50)
Mapper = Callable[..., Iterable]


# --- the agency ---------------------------------------------------------------------


class AgencyAggregator:
    """The answering side: :meth:`offer`, then :meth:`release` once. Holds the secret key.

    Args:
        values: the attribute per dataset row (integers in [0, value_bound]).
        groups: group index per dataset row, in range(len(group_names)).
        permutation: from :class:`psi_shuffle.AgencyShuffler` (position -> dataset row).
        value_bound: the declared per-row maximum: DP sensitivity of a sum.
        with_sums: False for count-only queries (no value ciphertexts are sent).
    """

    def __init__(self, values: Sequence[int], groups: Sequence[int],
                 group_names: Sequence[str], permutation: Sequence[int], *, value_bound: int,
                 with_sums: bool = True, mapper: Mapper = map) -> None:
        n_rows, self.group_names = len(permutation), tuple(group_names)
        if not (len(values) == len(groups) == n_rows > 0) or not self.group_names:
            raise ValueError("values, groups and permutation must have one entry per row")
        if not 1 <= value_bound < 2**62:
            raise ValueError("value_bound must be in [1, 2^62)")
        perm = np.asarray(permutation, dtype=np.int64)
        self._values = np.asarray(values, dtype=np.int64)[perm]
        self._groups = np.asarray(groups, dtype=np.int64)[perm]
        if self._values.min() < 0 or self._values.max() > value_bound:
            raise ValueError("a value lies outside [0, value_bound]; values are never clamped")
        if self._groups.min() < 0 or self._groups.max() >= len(self.group_names):
            raise ValueError("a group index is out of range")
        self._ctx = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=POLY_MODULUS_DEGREE,
                               plain_modulus=sealapi.PlainModulus.Batching(
                                   POLY_MODULUS_DEGREE, PLAIN_MODULUS_BITS).value(),
                               coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES), n_threads=1)
        self.n, _, self.t = _parms(self._ctx)
        self.value_bound, self.with_sums, self._mapper = value_bound, with_sums, mapper
        self.rows, self.blocks = n_rows, -(-n_rows // self.n)
        quarter = self.t // 4
        totals = [_exact_sum(self._values[self._groups == g]) for g in range(len(group_names))]
        if max(totals) < quarter:  # no selection can reach t/4: one limb, no split
            self.limbs, self.limb_bits = 1, value_bound.bit_length()
        else:
            self.limb_bits = (quarter // n_rows).bit_length() - 1
            self.limbs = -(-value_bound.bit_length() // self.limb_bits)
        self._stage = "new"

    def __repr__(self) -> str:
        return f"<AgencyAggregator rows={self.rows} groups={len(self.group_names)} secret hidden>"

    def public_context(self) -> bytes:
        return self._ctx.serialize(save_public_key=True, save_secret_key=False,
                                   save_galois_keys=False, save_relin_keys=False)

    def _quantity(self, q: int, idx: np.ndarray) -> list[int]:
        if q == 0:
            return [1] * len(idx)
        if self.limbs == 1:
            return self._values[idx].tolist()
        shift, mask = self.limb_bits * (q - 1), (1 << self.limb_bits) - 1
        return ((self._values[idx] >> shift) & mask).tolist()

    def offer(self) -> EncryptedColumns:
        """Encrypt every (group, quantity, block) polynomial; the heavy agency step."""
        header, columns = self.offer_columns()
        return EncryptedColumns(header.context, header.rows, header.group_names, header.sums,
                                header.limbs, header.limb_bits,
                                tuple(ct for column in columns for ct in column))

    def offer_columns(self, columns_at_once: int = 4
                      ) -> tuple[EncryptedColumns, Iterator[list[bytes]]]:
        """:meth:`offer` as a stream: the header (no ciphertexts), then each (group,
        quantity) column's block ciphertexts, encrypted ``columns_at_once`` at a time
        through ``mapper``, so memory holds a few columns rather than all of them."""
        if self._stage != "new":
            raise ProtocolStateError("offer() was already made")
        self._stage = "offered"
        pub = self.public_context()
        header = EncryptedColumns(pub, self.rows, self.group_names, self.with_sums, self.limbs,
                                  self.limb_bits, ())
        per_group = 1 + (self.limbs if self.with_sums else 0)
        keys = [(g, q) for g in range(len(self.group_names)) for q in range(per_group)]

        def task(g: int, q: int) -> list:
            blocks = []
            for c in range(self.blocks):
                lo = c * self.n
                idx = lo + np.flatnonzero(self._groups[lo:lo + self.n] == g)
                blocks.append(((idx - lo).tolist(), self._quantity(q, idx)))
            return blocks

        def columns() -> Iterator[list[bytes]]:
            for a in range(0, len(keys), max(1, columns_at_once)):
                tasks = [task(g, q) for g, q in keys[a:a + max(1, columns_at_once)]]
                yield from self._mapper(encrypt_task, [pub] * len(tasks), tasks)

        return header, columns()

    def release(self, masked: MaskedAggregates, *, budget: EpsilonBudget,
                epsilon_count: Fraction | int | str | float,
                epsilon_sum: Fraction | int | str | float | None = None,
                min_group_size: int,
                mechanism: Callable[[int, Fraction], DiscreteLaplace] = DiscreteLaplace,
                ) -> AggregateRelease:
        """Check, charge the budget, decrypt the masked totals, add noise, suppress.

        Raises:
            InvalidCiphertext: wrong number or shape of ciphertexts, or no noise budget.
            BudgetExhausted: nothing is decrypted.
            AggregateError: the sum noise could overflow the plaintext modulus.
        """
        if self._stage != "offered":
            raise ProtocolStateError("release() needs one prior offer() and runs once")
        self._stage = "released"  # one attempt: a refused release is never retried
        per_group = 1 + (self.limbs if self.with_sums else 0)
        if len(masked.ciphertexts) != per_group * len(self.group_names):
            raise InvalidCiphertext("wrong number of masked aggregates")
        vectors = [_load_vector(self._ctx, c, self.n) for c in masked.ciphertexts]
        decryptor = sealapi.Decryptor(self._ctx.seal_context().data, self._ctx.secret_key().data)
        if any(decryptor.invariant_noise_budget(v.ciphertext()[0]) <= 0 for v in vectors):
            raise InvalidCiphertext("a masked aggregate has no noise budget left")
        count_noise = mechanism(1, _fraction(epsilon_count))
        eps = count_noise.epsilon
        sum_noise = None
        if self.with_sums:
            if epsilon_sum is None:
                raise ValueError("epsilon_sum is needed when sums are released")
            sum_noise = mechanism(self.value_bound, _fraction(epsilon_sum))
            if sum_noise.tail_bound() >= self.t // 4:
                raise AggregateError("sum noise scale too large for the plaintext modulus")
            eps += sum_noise.epsilon
        budget.charge(eps)
        n_inv, t = pow(self.n, -1, self.t), self.t
        consts = [sum(v.decrypt()) * n_inv % t for v in vectors]
        del self._ctx  # the secret key is not needed again
        out: list[tuple[int, tuple[int, ...]] | None] = []
        for g in range(len(self.group_names)):
            row = consts[g * per_group:(g + 1) * per_group]
            count = _centered(row[0], t) + count_noise.sample()
            sums = tuple(row[1:])
            if sum_noise is not None:
                sums = ((sums[0] + sum_noise.sample()) % t,) + sums[1:]
            out.append(None if count < min_group_size else (count, sums))
        return AggregateRelease(tuple(out), eps)


# --- the fund centre ----------------------------------------------------------------


class FundCentreAggregator:
    """The asking side: :meth:`evaluate` the agency's columns, then :meth:`result`.

    Args:
        selection: psi_shuffle's Selection (or a bool array) over the shuffled rows.
        count_epsilon: epsilon of the fund centre's own noise on the counts the agency
            sees; None lets the agency see exact per-group intersection counts.
        columns_per_task: (group, quantity) columns per ``mapper`` task; each task
            rebuilds the block selectors from the packed selection once.
    """

    def __init__(self, selection, *, count_epsilon: Fraction | int | str | float | None = 1,
                 rng: random.Random | None = None, mapper: Mapper = map,
                 columns_per_task: int = 3,
                 mechanism: Callable[[int, Fraction], DiscreteLaplace] = DiscreteLaplace) -> None:
        self._sel = np.asarray(getattr(selection, "bits", selection), dtype=bool)
        self._rng, self._columns_per_task = rng, columns_per_task
        self._mapper, self._mechanism = mapper, mechanism
        self._count_epsilon = None if count_epsilon is None else _fraction(count_epsilon)
        self._masks: list[int] = []
        self._header: EncryptedColumns | None = None
        self._stage = "new"

    def __repr__(self) -> str:
        return "<FundCentreAggregator masks hidden>"

    def evaluate(self, columns: EncryptedColumns) -> MaskedAggregates:
        """Select, add, flood and mask. Raises InvalidContext / InvalidCiphertext."""
        header = EncryptedColumns(columns.context, columns.rows, columns.group_names,
                                  columns.sums, columns.limbs, columns.limb_bits, ())
        blocks, k = self.expect(header)
        if len(columns.ciphertexts) != blocks * k:
            raise InvalidCiphertext("encrypted columns do not match the selection")
        cts = columns.ciphertexts
        return self.evaluate_columns(header, (cts[i * blocks:(i + 1) * blocks] for i in range(k)))

    def expect(self, header: EncryptedColumns) -> tuple[int, int]:
        """Check a columns header (context, shape): (blocks per column, number of columns).

        Raises InvalidContext / InvalidCiphertext.
        """
        n, _, _ = _parms(check_public_context(header.context))
        blocks, groups = -(-len(self._sel) // n), len(header.group_names)
        if (header.rows != len(self._sel) or groups == 0 or header.ciphertexts
                or not 1 <= header.limbs <= 62 or not 1 <= header.limb_bits <= 62):
            raise InvalidCiphertext("encrypted columns do not match the selection")
        return blocks, groups * (1 + (header.limbs if header.sums else 0))

    def evaluate_columns(self, header: EncryptedColumns, columns: Iterable[Sequence[bytes]],
                         tasks_at_once: int = 2) -> MaskedAggregates:
        """:meth:`evaluate` over a stream: ``header`` (see :meth:`expect`), then exactly
        its number of columns, each one ciphertext per block, consumed a few at a time."""
        _, k = self.open_columns(header)
        step = self._columns_per_task * max(1, tasks_at_once)
        it = iter(columns)
        while len(self._sums) < k:
            batch = [list(c) for c in itertools.islice(it, min(step, k - len(self._sums)))]
            if not batch:
                raise InvalidCiphertext("encrypted columns do not match the selection")
            self.add_columns(batch)
        if next(it, None) is not None:
            raise InvalidCiphertext("more encrypted columns than the header announced")
        return self.close_columns()

    # The three steps of evaluate_columns, for a caller that receives columns one
    # message at a time (protocols/aggregate.py): open, add batches, close.

    def open_columns(self, header: EncryptedColumns) -> tuple[int, int]:
        """Check the header (see :meth:`expect`); (blocks per column, number of columns)."""
        if self._stage != "new":
            raise ProtocolStateError("evaluate() runs once")
        self._stage = "evaluating"  # a refused evaluation is not retried on this state
        blocks, k = self.expect(header)
        self._open = (header, check_public_context(header.context), blocks, k)
        self._sums: list[bytes] = []
        return blocks, k

    def add_columns(self, batch: Sequence[Sequence[bytes]]) -> None:
        """Select and sum a batch of columns through ``mapper``, a few columns per task."""
        if self._stage != "evaluating":
            raise ProtocolStateError("add_columns() needs open_columns() first")
        header, _, blocks, k = self._open
        batch = [list(c) for c in batch]
        if len(self._sums) + len(batch) > k or any(len(c) != blocks for c in batch):
            raise InvalidCiphertext("encrypted columns do not match the selection")
        packed = np.packbits(self._sel).tobytes()
        tasks = [batch[i:i + self._columns_per_task]
                 for i in range(0, len(batch), self._columns_per_task)]
        self._sums += [ct for part in self._mapper(
            select_and_sum_task, [header.context] * len(tasks), [packed] * len(tasks),
            [len(self._sel)] * len(tasks), tasks) for ct in part]

    def close_columns(self) -> MaskedAggregates:
        """Flood and mask every column's sum, once all of them are in."""
        if self._stage != "evaluating":
            raise ProtocolStateError("close_columns() needs open_columns() first")
        header, ctx, _, k = self._open
        if len(self._sums) != k:
            raise InvalidCiphertext("encrypted columns do not match the selection")
        n, _, t = _parms(ctx)
        per_group = 1 + (header.limbs if header.sums else 0)
        n_inv, masks, out, half = pow(n, -1, t), [], [], t // 2
        for i, acc_bytes in enumerate(self._sums):
            acc = _load_vector(ctx, acc_bytes, n)
            rho = (_uniform_mod(t, n, self._rng) - half).tolist()
            acc.add_(ts.bfv_vector(ctx, [0] * n).mul_(rho)).add_(ts.bfv_vector(ctx, [0] * n))
            slots = _uniform_mod(t, n, self._rng)
            constant = int(slots.sum(dtype=object)) * n_inv % t  # the mask's constant coeff
            if i % per_group == 0:  # a count: shift the constant coefficient to nu
                nu = 0 if self._count_epsilon is None else \
                    self._mechanism(1, self._count_epsilon).sample()
                slots = (slots + (nu - constant) % t) % t
                constant = nu
            masks.append(constant)
            slots = np.where(slots > half, slots - t, slots)
            out.append(acc.add_(slots.tolist()).serialize())
        self._masks, self._header, self._t, self._stage = masks, header, t, "evaluated"
        self._sums = []
        return MaskedAggregates(tuple(out))

    def result(self, release: AggregateRelease) -> dict[str, GroupAggregate]:
        """Unmask the release. Raises InvalidCiphertext if its shape is wrong."""
        if self._stage != "evaluated" or self._header is None:
            raise ProtocolStateError("result() needs one prior evaluate() and runs once")
        cols, t, masks = self._header, self._t, self._masks
        per_group = 1 + (cols.limbs if cols.sums else 0)
        if len(release.groups) != len(cols.group_names):
            raise InvalidCiphertext("release does not match the query's groups")
        out = {}
        for g, (name, entry) in enumerate(zip(cols.group_names, release.groups)):
            if entry is None:
                out[name] = GroupAggregate(name, True)
                continue
            count_value, sums = entry
            if len(sums) != per_group - 1:
                raise InvalidCiphertext("release does not match the query's quantities")
            count = count_value - masks[g * per_group]
            total = None
            if cols.sums:
                total = sum(_centered(z - masks[g * per_group + 1 + l], t) << (cols.limb_bits * l)
                            for l, z in enumerate(sums))
            mean = total / count if total is not None and count > 0 else None
            out[name] = GroupAggregate(name, False, count, total, mean)
        self._masks, self._stage = [], "done"
        return out
