"""Grouped BFV aggregates over a shuffled match, two parties in one process, every
message serialised to bytes.

Exact results use a test-only noise "mechanism" (fixed samples), because OpenDP's
sampler cannot be seeded; OpenDP's own mechanism is tested statistically with bounds
whose failure probability is below 2^-60 (see ``test_discrete_laplace_*``).
"""

from __future__ import annotations

import random
from fractions import Fraction

import numpy as np
import pytest
import tenseal as ts
import tenseal.sealapi as sealapi

from protocols import he_aggregate as ha
from protocols import psi_shuffle as ps
from protocols.he_aggregate import (
    AgencyAggregator, AggregateRelease, BudgetExhausted, EncryptedColumns, EpsilonBudget,
    FundCentreAggregator, InvalidCiphertext, InvalidContext, MaskedAggregates,
)

from .conftest import FixedNoise

ROWS = 12_000  # two BFV blocks, the second one partial
DISTRICTS = ("天宁区", "钟楼区", "新北区", "武进区")


@pytest.fixture(scope="module")
def dataset():
    rng = random.Random(2024)
    ids = [b"3204%014d" % i for i in range(ROWS)]
    # District 3 is rare, so a minimum group size can suppress it.
    groups = [3 if rng.random() < 0.004 else rng.randrange(3) for _ in range(ROWS)]
    values = [rng.randrange(10**9 + 1) for _ in range(ROWS)]
    asked = rng.sample(ids, 3500) + [b"9999%014d" % i for i in range(500)]
    return ids, groups, values, asked


@pytest.fixture(scope="module")
def match(dataset):
    ids, _, _, asked = dataset
    fc = ps.FundCentreMatcher(asked)
    agency = ps.AgencyShuffler(ps.hash_identifiers(ids))
    response = agency.respond(ps.ShuffleRequest.from_bytes(fc.request().to_bytes()))
    selection = fc.select(ps.ShuffleResponse.from_bytes(response.to_bytes()))
    return selection, agency.permutation


def _plain(dataset, values=None):
    ids, groups, vals, asked = dataset
    vals, asked = values or vals, set(asked)
    out = {}
    for g, name in enumerate(DISTRICTS):
        picked = [v for i, v, gg in zip(ids, vals, groups) if gg == g and i in asked]
        out[name] = (len(picked), sum(picked))
    return out


def _run(dataset, match, *, values=None, value_bound=10**9, with_sums=True, budget=None,
         min_group_size=1, count_epsilon=None, eps_sum="0.5"):
    selection, permutation = match
    _, groups, vals, _ = dataset
    agency = AgencyAggregator(values or vals, groups, DISTRICTS, permutation,
                              value_bound=value_bound, with_sums=with_sums)
    fc = FundCentreAggregator(selection, count_epsilon=count_epsilon, mechanism=FixedNoise)
    columns = EncryptedColumns.from_bytes(agency.offer().to_bytes())
    masked = MaskedAggregates.from_bytes(fc.evaluate(columns).to_bytes())
    release = agency.release(masked, budget=budget or EpsilonBudget("fc", "flex", "2025-06", 10),
                             epsilon_count="0.5", epsilon_sum=eps_sum if with_sums else None,
                             min_group_size=min_group_size, mechanism=FixedNoise)
    return fc.result(AggregateRelease.from_bytes(release.to_bytes())), agency, columns, masked


def test_grouped_sum_count_mean_equal_the_plain_computation(dataset, match) -> None:
    result, agency, columns, _ = _run(dataset, match)
    assert agency.limbs == 1 and len(columns.ciphertexts) == 4 * 2 * 2
    for name, (count, total) in _plain(dataset).items():
        r = result[name]
        assert (r.suppressed, r.count, r.total) == (False, count, total)
        assert r.mean == pytest.approx(total / count)
    assert sum(r.total for r in result.values()) > 10**12  # exact beyond 10^12


def test_limbs_keep_huge_totals_exact(dataset, match) -> None:
    rng = random.Random(5)
    big = [rng.randrange(2**58) for _ in range(ROWS)]
    result, agency, _, _ = _run(dataset, match, values=big, value_bound=2**58 - 1)
    assert agency.limbs > 1
    for name, (count, total) in _plain(dataset, big).items():
        assert (result[name].count, result[name].total) == (count, total)
    assert result[DISTRICTS[0]].total > 2**64  # beyond any machine integer


def test_count_only_query(dataset, match) -> None:
    result, _, columns, _ = _run(dataset, match, with_sums=False)
    assert len(columns.ciphertexts) == 4 * 2
    for name, (count, _) in _plain(dataset).items():
        assert (result[name].count, result[name].total, result[name].mean) == (count, None, None)


def test_fixed_noise_sample_is_released_exactly(dataset, match) -> None:
    FixedNoise.count, FixedNoise.total = 3, -1234
    result, *_ = _run(dataset, match, count_epsilon=1)  # fund-centre noise cancels out too
    for name, (count, total) in _plain(dataset).items():
        assert (result[name].count, result[name].total) == (count + 3, total - 1234)


def test_small_groups_are_suppressed_by_the_agency(dataset, match) -> None:
    plain = _plain(dataset)
    k = plain["武进区"][0] + 1
    assert all(plain[d][0] >= k for d in DISTRICTS[:3])
    result, *_ = _run(dataset, match, min_group_size=k)
    assert result["武进区"].suppressed and result["武进区"].total is None
    assert not any(result[d].suppressed for d in DISTRICTS[:3])
    FixedNoise.count = -plain["天宁区"][0]  # the decision is taken on the noisy count
    result, *_ = _run(dataset, match, min_group_size=1)
    assert result["天宁区"].suppressed


def test_budget_is_charged_and_exhaustion_refuses_before_decrypting(dataset, match) -> None:
    budget = EpsilonBudget("fund-centre", "flexible_workers", "2025-06", 1)
    _run(dataset, match, budget=budget)  # 0.5 for counts + 0.5 for sums
    assert budget.spent == 1 and budget.remaining == 0
    with pytest.raises(BudgetExhausted, match="flexible_workers"):
        _run(dataset, match, budget=budget)
    assert budget.spent == 1


def test_epsilon_budget_arithmetic_is_exact() -> None:
    budget = EpsilonBudget("fc", "roll", 7, "1")
    for _ in range(10):
        budget.charge(0.1)
    assert budget.remaining == 0
    with pytest.raises(BudgetExhausted):
        budget.charge(Fraction(1, 10**9))
    with pytest.raises(ValueError):
        budget.charge(0)


def test_discrete_laplace_noise_within_stated_bounds() -> None:
    mech = ha.DiscreteLaplace(1, "0.1")  # scale 10
    draws = np.array([mech.sample() for _ in range(2000)])
    assert mech.scale == 10 and mech.epsilon == Fraction(1, 10)
    assert np.all(np.abs(draws) <= mech.tail_bound())  # each fails w.p. <= 2^-64
    assert abs(draws.mean()) < 2.5  # sd of the mean ~0.32: 7.9 sd
    assert 8 < np.abs(draws).mean() < 12  # E|X| ~ 9.98, sd ~0.22
    assert draws.dtype.kind == "i"


def test_discrete_laplace_refuses_bad_parameters() -> None:
    with pytest.raises(ValueError):
        ha.DiscreteLaplace(1, 0)
    with pytest.raises(ValueError):
        ha.DiscreteLaplace(0, 1)


def test_sum_noise_too_large_for_the_modulus_is_refused(dataset, match) -> None:
    selection, permutation = match
    _, groups, values, _ = dataset
    agency = AgencyAggregator(values, groups, DISTRICTS, permutation, value_bound=2**61)
    masked = FundCentreAggregator(selection, count_epsilon=None).evaluate(agency.offer())
    budget = EpsilonBudget("fc", "flex", 1, 100)
    with pytest.raises(ha.AggregateError, match="noise"):
        agency.release(masked, budget=budget, epsilon_count=1, epsilon_sum="0.0001",
                       min_group_size=1)
    assert budget.spent == 0


def test_fund_centre_cannot_decrypt(dataset, match) -> None:
    *_, columns, _ = _run(dataset, match)
    ctx = ha.check_public_context(columns.context)
    assert not ctx.has_secret_key() and not ctx.is_private()
    vec = ts.bfv_vector_from(ctx, columns.ciphertexts[1])
    with pytest.raises(Exception):
        vec.decrypt()


def _coefficients(agency: AgencyAggregator, data: bytes) -> list[int]:
    """Test-only: the agency's decryption as polynomial coefficients mod t."""
    ctx = agency._ctx
    slots = ts.bfv_vector_from(ctx, data).decrypt()
    pt = sealapi.Plaintext()
    sealapi.BatchEncoder(ctx.seal_context().data).encode(slots, pt)
    return [pt[i] for i in range(agency.n)]


def test_agency_sees_only_uniform_masked_values(dataset, match) -> None:
    selection, permutation = match
    _, groups, values, _ = dataset
    agency = AgencyAggregator(values, groups, DISTRICTS, permutation, value_bound=10**9)
    masked = FundCentreAggregator(selection, count_epsilon=None).evaluate(agency.offer())
    plain, t = _plain(dataset), agency.t
    count = _coefficients(agency, masked.ciphertexts[0])
    total = _coefficients(agency, masked.ciphertexts[1])
    assert count[0] == plain[DISTRICTS[0]][0]  # count_epsilon=None: the documented leak
    assert total[0] != plain[DISTRICTS[0]][1]  # the sum is masked
    for coeffs in (count[1:], total[1:]):  # everything else is uniform mod t
        mean = np.mean(np.array(coeffs, dtype=float)) / t
        assert 0.45 < mean < 0.55  # sd ~0.0032
        assert min(coeffs) < t // 100 and max(coeffs) > t - t // 100


def test_context_with_secret_key_is_refused(dataset, match) -> None:
    selection, permutation = match
    _, groups, values, _ = dataset
    agency = AgencyAggregator(values[:100], groups[:100], DISTRICTS, np.arange(100),
                              value_bound=10**9)
    leaky = agency._ctx.serialize(save_secret_key=True)
    with pytest.raises(InvalidContext, match="secret key"):
        ha.check_public_context(leaky)
    columns = agency.offer()
    forged = EncryptedColumns(leaky, *[getattr(columns, f) for f in (
        "rows", "group_names", "sums", "limbs", "limb_bits", "ciphertexts")])
    with pytest.raises(InvalidContext):
        FundCentreAggregator(np.ones(100, bool)).evaluate(forged)


@pytest.mark.parametrize("degree, bits, t_bits", [
    (8192, [60, 60, 60, 60], 55),  # 240 > 218
    (16384, [60] * 8, 55),  # 480 > 438
    (4096, [40, 40, 40], 50),  # 120 > 109
    (2048, [27, 27], 50),  # degree below the table
    (8192, [50, 50, 50, 50], 30),  # t too small to flood the selection noise
])
def test_parameters_below_the_bound_are_refused(degree, bits, t_bits) -> None:
    t = sealapi.PlainModulus.Batching(degree, t_bits).value()
    with pytest.raises(InvalidContext):
        ha.check_parameters(degree, bits, t)


def test_parameters_at_the_bound_are_accepted() -> None:
    for degree, bits in [(4096, [36, 36, 37]), (8192, [43, 43, 44, 44, 44]),
                         (16384, [48] * 9)]:
        ha.check_parameters(degree, bits, sealapi.PlainModulus.Batching(degree, 50).value())


def test_weak_real_contexts_are_refused() -> None:
    for degree, bits, t_bits in [(2048, [27, 27], 20), (8192, [], 30)]:
        ctx = ts.context(ts.SCHEME_TYPE.BFV, poly_modulus_degree=degree,
                         plain_modulus=sealapi.PlainModulus.Batching(degree, t_bits).value(),
                         coeff_mod_bit_sizes=bits)
        with pytest.raises(InvalidContext):
            ha.check_public_context(ctx.serialize())
    with pytest.raises(InvalidContext):
        ha.check_public_context(b"not a context")


def test_tampered_messages_are_refused(dataset, match) -> None:
    selection, permutation = match
    _, groups, values, _ = dataset
    agency = AgencyAggregator(values, groups, DISTRICTS, permutation, value_bound=10**9)
    columns = agency.offer()
    with pytest.raises(InvalidCiphertext):  # columns for another row count
        FundCentreAggregator(selection.bits[:-1]).evaluate(columns)
    with pytest.raises(InvalidCiphertext):  # a garbage ciphertext
        FundCentreAggregator(selection).evaluate(EncryptedColumns(
            *[getattr(columns, f) for f in ("context", "rows", "group_names", "sums", "limbs",
                                            "limb_bits")], (b"junk",) + columns.ciphertexts[1:]))
    with pytest.raises(InvalidCiphertext):
        EncryptedColumns.from_bytes(columns.to_bytes() + b"\x00")
    fc = FundCentreAggregator(selection)
    masked = fc.evaluate(columns)
    budget = EpsilonBudget("fc", "flex", 1, 10)
    with pytest.raises(InvalidCiphertext):  # one masked aggregate missing
        agency.release(MaskedAggregates(masked.ciphertexts[1:]), budget=budget,
                       epsilon_count=1, epsilon_sum=1, min_group_size=1)
    with pytest.raises(ha.ProtocolStateError):  # and the state is spent
        agency.release(masked, budget=budget, epsilon_count=1, epsilon_sum=1, min_group_size=1)
    assert budget.spent == 0
    with pytest.raises(InvalidCiphertext):
        fc.result(AggregateRelease((None,), Fraction(1)))
    with pytest.raises(InvalidCiphertext):
        AggregateRelease.from_bytes(b"\x01garbage")


def test_values_outside_the_bound_are_refused_not_clamped(dataset, match) -> None:
    _, permutation = match
    _, groups, values, _ = dataset
    with pytest.raises(ValueError, match="clamped"):
        AgencyAggregator([10**9 + 1] + values[1:], groups, DISTRICTS, permutation,
                         value_bound=10**9)


def test_streamed_columns_give_the_same_figures_and_a_wrong_count_is_refused(dataset, match) -> None:
    selection, permutation = match
    _, groups, values, _ = dataset

    def offered():
        agency = AgencyAggregator(values, groups, DISTRICTS, permutation, value_bound=10**9)
        header, columns = agency.offer_columns(columns_at_once=3)
        wire = [ha.pack_column(c) for c in columns]  # what the node sends, one round each
        return agency, EncryptedColumns.from_bytes(header.to_bytes()), wire

    agency, header, wire = offered()
    assert header.ciphertexts == () and len(wire) == len(DISTRICTS) * 2
    fc = FundCentreAggregator(selection, count_epsilon=None, mechanism=FixedNoise)
    blocks, k = fc.expect(header)
    assert k == len(wire) and blocks == 2
    masked = fc.evaluate_columns(header, (ha.unpack_column(w) for w in wire), tasks_at_once=1)
    release = agency.release(masked, budget=EpsilonBudget("fc", "flex", "e", 10),
                             epsilon_count="0.5", epsilon_sum="0.5", min_group_size=1,
                             mechanism=FixedNoise)
    result = fc.result(release)
    for name, (count, total) in _plain(dataset).items():
        assert (result[name].count, result[name].total) == (count, total)
    for columns in (wire[:-1], wire + wire[:1], [ha.pack_column(ha.unpack_column(w)[:1])
                                                 for w in wire]):
        with pytest.raises(InvalidCiphertext):
            FundCentreAggregator(selection).evaluate_columns(
                header, (ha.unpack_column(w) for w in columns))
