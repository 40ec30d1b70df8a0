"""Parameters derived for statistical security 40, and the vectorised cuckoo insertion."""
from __future__ import annotations

import math
import os

import numpy as np
import pytest

from protocols.bulk import cuckoo, params
from protocols.bulk.params import KAPPA, SIGMA, derive


def test_expansion_follows_the_psty19_fit() -> None:
    # Large n: lambda = 123.5 e - 130 - log2 n, solved at lambda = 40.
    n = 1 << 24
    assert params.cuckoo_expansion(n) == pytest.approx((40 + 130 + 24) / 123.5, rel=1e-3)
    assert 1.50 < params.cuckoo_expansion(100_000) < 1.52
    assert 1.53 < params.cuckoo_expansion(1_000_000) < 1.55
    # Small tables need relatively more room (the erf terms).
    assert params.cuckoo_expansion(10) > params.cuckoo_expansion(1000) > 1.4


@pytest.mark.parametrize("n", [1, 2, 3, 50, 127, 1000, 100_000, 1_000_000])
def test_bins_cover_the_expansion_and_are_row_aligned(n: int) -> None:
    bins = params.bin_count(n)
    assert bins % params.ROW_ALIGN == 0 and bins >= params.cuckoo_expansion(n) * n
    assert bins >= n


def test_code_distance_meets_kappa_up_to_the_size_limit() -> None:
    assert params.code_distance(1_000_000, 1_000_000) == 142
    top = params.code_distance(params.MAX_ELEMENTS, params.MAX_ELEMENTS)
    assert KAPPA <= top == 131
    # The bound itself: pairs * P[Bin(512, 1/2) < d] <= 2^-40 at d, not at d + 1.
    tail = lambda d: sum(math.comb(512, k) for k in range(d)) / 2**512  # noqa: E731
    pairs = 2_000_000 * 1_999_999 // 2
    assert pairs * tail(142) <= 2.0**-SIGMA < pairs * tail(143)


def test_output_length_is_sigma_plus_log_of_comparisons() -> None:
    assert params.output_bytes(1_000_000, 1_000_000) == 10     # 40 + 40 bits
    assert params.output_bytes(100_000, 100_000) == 10         # 40 + 34 -> 74 bits
    assert params.output_bytes(65_536, 65_536) == 9            # 40 + 32 -> 72 bits
    assert params.output_bytes(1, 1) == 5
    n1, n2 = 3000, 70_000
    ell = 8 * params.output_bytes(n1, n2)
    assert n1 * n2 * 2.0**-ell <= 2.0**-SIGMA


def test_derive_refuses_empty_and_oversized_sets() -> None:
    with pytest.raises(ValueError):
        derive(0, 10)
    with pytest.raises(ValueError):
        derive(10, params.MAX_ELEMENTS + 1)
    p = derive(1_000_000, 1_000_000)
    assert (p.bins, p.value_bytes, p.distance) == (params.bin_count(1_000_000), 10, 142)


def _random_digests(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, 256, (n, 16), dtype=np.uint8)


@pytest.mark.parametrize("n", [1, 5, 100, 5000, 200_000])
def test_insertion_places_each_element_once_in_a_candidate_bin(n: int) -> None:
    bins = params.bin_count(n)
    candidates = cuckoo.candidate_bins(_random_digests(n, np.random.default_rng(n)), bins)
    assert candidates.min() >= 0 and candidates.max() < bins
    table = cuckoo.insert(candidates, bins)
    assert table is not None
    placed = table.owner[table.owner >= 0]
    assert np.array_equal(np.sort(placed), np.arange(n))            # each exactly once
    where = np.flatnonzero(table.owner >= 0)
    position = np.empty(n, np.int64)
    position[placed] = where
    assert np.array_equal(candidates[np.arange(n), table.function], position)


def test_candidate_bins_use_three_independent_digest_words() -> None:
    digests = np.zeros((1, 16), np.uint8)
    digests[0, 4:8] = 0xFF                                          # word 1 only
    assert cuckoo.candidate_bins(digests, 1000).tolist() == [[0, 999, 0]]


def test_no_failure_in_many_small_tables_at_the_derived_size() -> None:
    # Small tables are where the fit is least certain; 2000 runs, none may fail.
    rng = np.random.default_rng(99)
    for n in (3, 20, 64, 200):
        bins = params.bin_count(n)
        for _ in range(500):
            assert cuckoo.insert(cuckoo.candidate_bins(_random_digests(n, rng), bins), bins) is not None


def test_an_overfull_table_fails_instead_of_looping() -> None:
    n = 1000
    digests = _random_digests(n, np.random.default_rng(1))
    assert cuckoo.insert(cuckoo.candidate_bins(digests, 900), 900) is None   # fewer bins than elements
    assert cuckoo.insert(cuckoo.candidate_bins(digests, 1000), 1000) is None  # load 1 > 0.918


def test_a_repeated_element_cannot_sit_in_two_places_when_its_bins_are_one() -> None:
    digests = np.repeat(np.frombuffer(os.urandom(16), np.uint8)[None], 4, axis=0)
    assert cuckoo.insert(cuckoo.candidate_bins(digests, 128), 128) is None  # 4 copies, 3 bins
