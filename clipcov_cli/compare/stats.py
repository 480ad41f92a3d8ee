"""Paired comparisons over seeds: pure functions on per-seed values.

The interval is Student's t over seeds: for a method and a baseline trained with the same seeds,
the per-seed differences d_s = m_s - b_s give mean(d) +- t_{0.975, n-1} * sd(d) / sqrt(n). It
covers the run-to-run variation of training and of the seeded selections; the test split is the
same for every run, so its sampling error (common to all methods) is not part of it."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Interval:
    mean: float
    lo: float | None  # None with fewer than two values: no spread to measure
    hi: float | None
    n: int

    def excludes_zero(self) -> bool | None:
        if self.lo is None or self.hi is None:
            return None
        return self.lo > 0 or self.hi < 0

    def to_json(self) -> dict:
        return {"mean": self.mean, "ci95": None if self.lo is None else [self.lo, self.hi], "n": self.n}


def t_quantile(level: float, df: int) -> float:
    from scipy.stats import t

    return float(t.ppf(0.5 + level / 2, df))


def t_interval(values: list[float], level: float = 0.95) -> Interval:
    """Mean of ``values`` and its two-sided Student-t interval at ``level``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = math.fsum(values) / n
    if n < 2:
        return Interval(mean, None, None, n)
    sd = math.sqrt(math.fsum((v - mean) ** 2 for v in values) / (n - 1))
    half = t_quantile(level, n - 1) * sd / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(method: dict[int, float], baseline: dict[int, float], level: float = 0.95) -> Interval | None:
    """Interval of ``method - baseline`` over the seeds both have (values by seed); None if none."""
    seeds = sorted(set(method) & set(baseline))
    if not seeds:
        return None
    return t_interval([method[s] - baseline[s] for s in seeds], level)
