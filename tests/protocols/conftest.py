"""Fixtures the protocol tests share: known noise, and one Paillier key per run."""
from __future__ import annotations

from fractions import Fraction

import phe
import pytest


class FixedNoise:
    """Test-only mechanism: a fixed released sample instead of OpenDP's draw (OpenDP's
    sampler cannot be seeded). Set ``count`` and ``total`` to the samples wanted."""

    count, total = 0, 0

    def __init__(self, sensitivity: int, epsilon: Fraction) -> None:
        self.epsilon, self.scale = epsilon, 0.0
        self._value = FixedNoise.count if sensitivity == 1 else FixedNoise.total

    def sample(self) -> int:
        return self._value

    def tail_bound(self, log2_failure: int = 64) -> int:
        return abs(self._value)


@pytest.fixture(autouse=True)
def _zero_noise():
    FixedNoise.count = FixedNoise.total = 0


@pytest.fixture(scope="session")
def paillier_keys():
    """A production-size (3072-bit) key: generating it is the slow part, so once."""
    return phe.generate_paillier_keypair(n_length=3072)
