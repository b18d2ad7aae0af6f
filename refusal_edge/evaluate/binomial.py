"""Exact (Clopper–Pearson) binomial confidence bounds in plain numpy: no scipy.

Everything reduces to the binomial CDF, summed in log space so that n in the tens of thousands neither
overflows nor underflows. The one-sided Clopper–Pearson upper bound U(k) of a rate p seen k times in n
trials satisfies P(Bin(n, U) <= k) = 1 - confidence; it is valid for every n (no normal approximation), so
P(p > U(K)) <= 1 - confidence whatever p is.
"""

from __future__ import annotations

import numpy as np


def binomial_cdf(k: int, n: int, p: float) -> float:
    """P(Bin(n, p) <= k)."""
    if k < 0:
        return 0.0
    return float(_cdf_table(n, p)[min(k, n)])


def _cdf_table(n: int, p: float) -> np.ndarray:
    """P(Bin(n, p) <= k) for k = 0..n, summed in log space."""
    if p <= 0.0:
        return np.ones(n + 1)
    if p >= 1.0:
        return np.r_[np.zeros(n), 1.0]
    i = np.arange(n + 1)
    # log C(n, i) as a running sum of log((n - i + 1) / i): no lgamma needed, exact to rounding.
    log_choose = np.r_[0.0, np.cumsum(np.log((n - i[1:] + 1) / i[1:]))]
    log_pmf = log_choose + i * np.log(p) + (n - i) * np.log1p(-p)
    top = log_pmf.max()
    return np.minimum(1.0, np.cumsum(np.exp(log_pmf - top)) * np.exp(top))


def most_events_within(n: int, limit: float, confidence: float) -> int | None:
    """The largest count k whose upper bound on the rate is <= ``limit``, or None when even k = 0 is not.

    U(k) <= limit exactly when P(Bin(n, limit) <= k) <= 1 - confidence (the CDF falls as p grows)."""
    if limit >= 1.0:
        return n
    passing = np.flatnonzero(_cdf_table(n, limit)[:n] <= 1.0 - confidence)  # k = n never bounds a rate < 1
    return int(passing[-1]) if passing.size else None


def fewest_events_within(n: int, floor: float, confidence: float) -> int | None:
    """The smallest count k whose lower bound on the rate is >= ``floor``, or None when even k = n is not.

    The mirror image of ``most_events_within``: non-events of a rate >= floor are a rate <= 1 - floor."""
    most_misses = most_events_within(n, 1.0 - floor, confidence)
    return None if most_misses is None else n - most_misses


def upper_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson upper bound on a rate seen k times in n trials."""
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    delta = 1.0 - confidence
    low, high = k / n, 1.0
    for _ in range(60):  # bisection: the CDF is monotone in p; 60 halvings reach double precision
        mid = (low + high) / 2
        if binomial_cdf(k, n, mid) > delta:
            low = mid
        else:
            high = mid
    return high


def lower_bound(k: int, n: int, confidence: float) -> float:
    """One-sided Clopper–Pearson lower bound: one minus the upper bound of the misses."""
    return 0.0 if n <= 0 else 1.0 - upper_bound(n - k, n, confidence)


def trials_needed(limit: float, confidence: float) -> int | None:
    """The fewest trials for which zero events bound the rate by ``limit`` ((1 - limit)^n <= 1 - confidence);
    None when no number of trials can (limit 0)."""
    if limit >= 1.0:
        return 0
    if limit <= 0.0:
        return None
    return int(np.ceil(np.log(1.0 - confidence) / np.log1p(-limit) - 1e-9))
