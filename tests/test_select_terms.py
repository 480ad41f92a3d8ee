"""Each formula of the ClipCov method against a brute-force float64 computation."""

from __future__ import annotations

import numpy as np
import pytest

from clipcov_cli.select.clipcov import terms
from tests.select_helpers import clustered


def brute_s(V, T, j, l, tau):
    V, T = V.astype(np.float64), T.astype(np.float64)
    x, y = float(V[j] @ T[l]), float(V[l] @ T[j])
    return (x if x > tau else 0.0) + (y if y > tau else 0.0)


@pytest.fixture
def data():
    V, T, labels, Z = clustered(60, 16, 3, seed=1, spread=2.0)
    return V, T, labels, Z


def test_pseudo_labels_alignment_agreement(data):
    V, T, labels, Z = data
    y = terms.pseudo_labels(V, Z)
    brute = [int(np.argmax([float(V[i].astype(np.float64) @ Z[c].astype(np.float64)) for c in range(len(Z))])) for i in range(len(V))]
    assert y.tolist() == brute
    e = terms.alignment(V, T)
    l = terms.label_agreement(T, Z, y)
    for i in range(len(V)):
        assert e[i] == pytest.approx(sum(float(a) * float(b) for a, b in zip(V[i], T[i])), abs=1e-12)
        assert l[i] == pytest.approx(float(T[i].astype(np.float64) @ Z[y[i]].astype(np.float64)), abs=1e-6)


@pytest.mark.parametrize("tau", [0.0, 0.2, -0.1, -2.0])
def test_cross_similarity_and_representativeness(data, tau):
    V, T, labels, _ = data
    m = len(V)
    s = terms.cross_similarity(V, T, V, T, tau)
    for j in range(0, m, 7):
        for l in range(0, m, 5):
            assert s[j, l] == brute_s(V, T, j, l, tau)  # exact: float16 products in float64
    r_brute = np.array([sum(brute_s(V, T, i, j, tau) for i in range(m)) / m for j in range(m)])
    np.testing.assert_allclose(terms.representativeness_exact(V, T, tau, block=7), r_brute, atol=1e-12)
    if tau < -1.01:  # no thresholding: the mean identity is the same sum
        np.testing.assert_allclose(terms.representativeness_mean(V, T), r_brute, atol=1e-9)


def test_representativeness_of_a_row_does_not_depend_on_its_position():
    """Equal rows get bit-equal r wherever they sit in the class (exact products, one summation order
    for every row and every column), whatever the block size."""
    V, T, _, _ = clustered(300, 64, 4, seed=2, spread=1.5)
    V, T = np.concatenate([V, V[:40]]), np.concatenate([T, T[:40]])
    for block in (terms.BLOCK_ROWS, 33):
        r = terms.representativeness_exact(V, T, 0.0, block=block)
        assert np.array_equal(r[:40], r[300:])


def test_mean_identity_differs_only_where_cross_similarities_are_negative(data):
    V, T, _, _ = data
    M = V.astype(np.float64) @ T.astype(np.float64).T
    assert (M < 0).any()  # spread data: some negative cross similarities
    diff = terms.representativeness_exact(V, T, 0.0) - terms.representativeness_mean(V, T)
    neg = np.where(M < 0, -M, 0.0)
    np.testing.assert_allclose(diff, (neg.sum(0) + neg.sum(1)) / len(V), atol=1e-5)


def test_center_term_modular_and_gain(data):
    V, T, labels, _ = data
    k = 0
    inside, outside = labels == k, labels != k
    c = terms.center_term(V[inside], T[inside], V[outside].astype(np.float64).sum(0), T[outside].astype(np.float64).sum(0), int(outside.sum()))
    mT, mV = T[outside].astype(np.float64).mean(0), V[outside].astype(np.float64).mean(0)
    brute = [float(v.astype(np.float64) @ mT + t.astype(np.float64) @ mV) for v, t in zip(V[inside], T[inside])]
    np.testing.assert_allclose(c, brute, atol=1e-12)
    assert terms.center_term(V, T, np.zeros(16), np.zeros(16), 0).tolist() == [0.0] * len(V)
    a = terms.modular_score(np.array([1.0]), np.array([0.5]), np.array([0.25]), np.array([0.1]), 2, 0.5, 1)
    assert a[0] == pytest.approx(1.0 + 1.0 + 0.125 - 0.1)
    assert terms.marginal_gain(3.0, 4.0, 8) == 2.5


@pytest.mark.parametrize("tau", [0.0, 0.1])
def test_objective_increments_are_marginal_gains(data, tau):
    V, T, labels, _ = data
    idx = np.flatnonzero(labels == labels[0])
    Vk, Tk = V[idx], T[idx]
    a = np.random.default_rng(0).normal(size=len(idx))
    S: list[int] = []
    for j in range(min(6, len(idx))):
        red = sum(brute_s(Vk, Tk, j, l, tau) for l in S)
        before = terms.objective(a, Vk, Tk, np.array(S), tau)
        after = terms.objective(a, Vk, Tk, np.array(S + [j]), tau)
        assert after - before == pytest.approx(terms.marginal_gain(a[j], red, len(idx)), abs=1e-12)
        S.append(j)
