"""The paired t intervals of `clipcov compare`: known answers and a brute-force check."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clipcov_cli.compare.stats import paired_difference, t_interval, t_quantile


def test_t_quantiles_match_the_table():
    # Student's t table, two-sided 95%: df 1, 2, 4, 30
    for df, q in ((1, 12.706), (2, 4.303), (4, 2.776), (30, 2.042)):
        assert t_quantile(0.95, df) == pytest.approx(q, abs=1e-3)


def test_known_answer():
    iv = t_interval([1.0, 2.0, 3.0])
    # mean 2, sd 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    assert iv.mean == pytest.approx(2.0)
    assert iv.lo == pytest.approx(2 - 4.302653 / math.sqrt(3), abs=1e-5)
    assert iv.hi == pytest.approx(2 + 4.302653 / math.sqrt(3), abs=1e-5)
    assert iv.excludes_zero() is False and iv.to_json()["ci95"] == [iv.lo, iv.hi]
    assert t_interval([1.0, 1.1, 1.2]).excludes_zero() is True
    assert t_interval([-1.0, -1.1, -1.2]).excludes_zero() is True


def test_one_value_has_no_interval():
    iv = t_interval([0.25])
    assert iv.mean == 0.25 and iv.lo is None and iv.excludes_zero() is None
    assert iv.to_json() == {"mean": 0.25, "ci95": None, "n": 1}


def test_paired_difference_pairs_by_seed():
    m = {0: 0.30, 1: 0.20, 2: 0.25, 7: 0.9}
    b = {2: 0.20, 0: 0.28, 1: 0.21, 5: 0.0}
    iv = paired_difference(m, b)
    assert iv.n == 3 and iv.mean == pytest.approx((0.02 - 0.01 + 0.05) / 3)
    assert paired_difference({0: 1.0}, {1: 1.0}) is None


def test_coverage_by_simulation():
    """Brute force: draws from a normal with a known mean; the 95% interval covers it ~95% of the time."""
    rng = np.random.default_rng(0)
    trials, covered = 4000, 0
    for _ in range(trials):
        iv = t_interval(list(rng.normal(0.03, 0.02, size=5)))
        covered += iv.lo <= 0.03 <= iv.hi
    assert abs(covered / trials - 0.95) < 0.015
