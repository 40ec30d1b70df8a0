"""Differential privacy shared by the query kinds: an epsilon budget and OpenDP's
discrete Laplace mechanism (never hand-rolled floating-point noise).

Pure: no clock, no storage. The node persists what was spent (per partner, dataset and
key epoch, in the ledger) and reserves a query's epsilon before answering it;
:class:`ReleasePlan` computes what one release is charged and how it is noised, and
hands the release a budget of exactly that reservation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction

__all__ = ["BudgetExhausted", "EpsilonBudget", "DiscreteLaplace", "Exact", "Unmetered",
           "ReleasePlan"]


class BudgetExhausted(ValueError):
    """The epsilon budget for this partner, dataset and epoch cannot cover the query."""


def _fraction(x: Fraction | int | str | float) -> Fraction:
    return Fraction(str(x)) if isinstance(x, float) else Fraction(x)


class EpsilonBudget:
    """Pure-DP epsilon for one partner x dataset x epoch; refuses when exhausted.

    Amounts are exact fractions (floats are read through their shortest repr). The
    node persists ``spent`` and writes every charge to the ledger.
    """

    __slots__ = ("partner", "dataset", "epoch", "total", "spent")

    def __init__(self, partner: str, dataset: str, epoch: str | int,
                 total: Fraction | int | str | float, spent: Fraction | int | str = 0) -> None:
        self.partner, self.dataset, self.epoch = partner, dataset, epoch
        self.total, self.spent = _fraction(total), _fraction(spent)
        if self.total < 0 or not 0 <= self.spent:
            raise ValueError("budget amounts must be non-negative")

    @property
    def remaining(self) -> Fraction:
        return max(self.total - self.spent, Fraction(0))

    def charge(self, epsilon: Fraction | int | str | float) -> Fraction:
        """Spend ``epsilon`` or raise :class:`BudgetExhausted` (spending nothing)."""
        eps = _fraction(epsilon)
        if eps <= 0:
            raise ValueError("epsilon must be positive")
        if self.spent + eps > self.total:
            raise BudgetExhausted(
                f"epsilon budget exhausted for partner {self.partner!r}, dataset "
                f"{self.dataset!r}, epoch {self.epoch!r}: {float(self.remaining):.6g} left, "
                f"{float(eps):.6g} asked")
        self.spent += eps
        return self.remaining


class DiscreteLaplace:
    """OpenDP's integer (discrete) Laplace mechanism for a sensitivity and epsilon.

    ``scale = sensitivity / epsilon``; OpenDP's privacy map is checked to give at most
    epsilon (up to 1e-9 relative float slack). Noise is sampled as ``M(0)``.
    """

    def __init__(self, sensitivity: int, epsilon: Fraction | int | str | float) -> None:
        import opendp.prelude as dp

        dp.enable_features("contrib")
        eps = _fraction(epsilon)
        if eps <= 0 or sensitivity < 1:
            raise ValueError("epsilon must be positive and sensitivity at least 1")
        self.epsilon, self.sensitivity = eps, int(sensitivity)
        self.scale = float(Fraction(self.sensitivity) / eps)
        self._measurement = dp.m.make_laplace(
            dp.atom_domain(T="i64"), dp.absolute_distance(T="i64"), scale=self.scale)
        if self._measurement.map(self.sensitivity) > float(eps) * (1 + 1e-9):
            raise ValueError("OpenDP's privacy map exceeds the requested epsilon")

    def sample(self) -> int:
        return int(self._measurement(0))

    def tail_bound(self, log2_failure: int = 64) -> int:
        """B with P(|noise| > B) <= 2^-log2_failure (P(|X| >= k) <= 2 exp(-k/scale))."""
        return math.ceil(self.scale * (log2_failure + 1) * math.log(2)) + 1


class Exact:
    """The mechanism of an exact release (a plan without epsilon): no noise."""

    epsilon = Fraction(0)

    def __init__(self, sensitivity: int, epsilon: Fraction | int | str | float) -> None:
        pass

    def sample(self) -> int:
        return 0

    def tail_bound(self, log2_failure: int = 64) -> int:
        return 0


class Unmetered:
    """The budget of an exact release: nothing is charged."""

    def charge(self, epsilon: Fraction | int | str | float) -> Fraction:
        return Fraction(0)


Mechanism = Callable[[int, Fraction], DiscreteLaplace]


@dataclass(frozen=True)
class ReleasePlan:
    """What one release of grouped counts (and sums) is charged, and how it is noised.

    ``epsilon`` is the query's whole epsilon (None: exact figures, nothing charged).
    Released with sums, it is split evenly between the counts and the sums (basic
    composition); a count's sensitivity is 1, a sum's the public value bound.
    ``mechanism`` is for tests, whose noise must be known (OpenDP cannot be seeded).
    """

    epsilon: Fraction | None
    with_sums: bool
    mechanism: Mechanism = DiscreteLaplace

    @classmethod
    def for_query(cls, epsilon: Fraction | int | str | float | None, with_sums: bool,
                  mechanism: Mechanism = DiscreteLaplace) -> ReleasePlan:
        return cls(None if epsilon is None else _fraction(epsilon), with_sums, mechanism)

    @property
    def epsilon_count(self) -> Fraction:
        if self.epsilon is None:
            return Fraction(0)
        return self.epsilon / 2 if self.with_sums else self.epsilon

    @property
    def epsilon_sum(self) -> Fraction | None:
        """None when no sums are released."""
        if not self.with_sums:
            return None
        return Fraction(0) if self.epsilon is None else self.epsilon / 2

    @property
    def noise(self) -> Mechanism:
        return Exact if self.epsilon is None else self.mechanism

    def budget(self, partner: str, dataset: str, epoch: str | int) -> EpsilonBudget | Unmetered:
        """A budget holding exactly this query's epsilon (what the node reserved for
        it), so a release can never charge more than was reserved."""
        if self.epsilon is None:
            return Unmetered()
        return EpsilonBudget(partner, dataset, epoch, self.epsilon)

    def noise_bounds(self, value_bound: int) -> tuple[int, int]:
        """(count bound, sum bound): |noise| exceeds each with probability <= 2^-64;
        0 where nothing is noised."""
        count = self.epsilon_count
        total = self.epsilon_sum
        return (self.mechanism(1, count).tail_bound() if count else 0,
                self.mechanism(value_bound, total).tail_bound() if total else 0)
