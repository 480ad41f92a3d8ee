"""The lazy per-class greedy merged by gain equals the plain greedy exactly: same picks, same order."""

from __future__ import annotations

import numpy as np
import pytest

from clipcov_cli.select.clipcov.greedy import ClassGreedy, merge_sequences, plain_greedy
from clipcov_cli.select.methods import ClipCovSelector
from tests.select_helpers import clustered, embedding_set


def run_clipcov(V, T, labels, Z, budget, tau, r_mode="exact"):
    emb = embedding_set(V, T, labels, Z)
    sel = ClipCovSelector(tau=tau, r_mode=r_mode).select(emb, budget)
    return emb, sel


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.0, 0.15, -2.0])
def test_equals_plain_greedy(seed, tau):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(40, 120)), int(rng.integers(1, 6))
    V, T, labels, Z = clustered(n, 12, k, seed=seed, spread=1.5)
    budget = int(rng.integers(1, n))
    emb, sel = run_clipcov(V, T, labels, Z, budget, tau)
    a = sel.all_scores
    picks, gains = plain_greedy(V, T, labels, a, budget, tau)
    assert sel.indices.tolist() == picks.tolist()
    assert sel.score.tolist() == gains.tolist()  # bit-identical gains


def test_ties_and_singleton_classes():
    V, T, labels, Z = clustered(30, 8, 4, seed=3, spread=1.0)
    # exact duplicates (ties everywhere) and a class of size 1
    V = np.concatenate([V, V[:6], V[:6]]); T = np.concatenate([T, T[:6], T[:6]])
    labels = np.concatenate([labels, labels[:6], labels[:6]])
    labels[0] = labels.max() + 1  # row 0 alone in its class
    Z = np.concatenate([Z, Z[:1]])
    for tau in (0.0, -2.0):
        for budget in (1, 10, 41, len(V)):
            emb, sel = run_clipcov(V, T, labels, Z, budget, tau)
            picks, gains = plain_greedy(V, T, labels, sel.all_scores, budget, tau)
            assert sel.indices.tolist() == picks.tolist()
            assert sel.score.tolist() == gains.tolist()
    assert sorted(sel.indices.tolist()) == list(range(len(V)))


def test_lazy_gains_non_increasing_per_class_and_extension_keeps_prefix():
    V, T, labels, Z = clustered(300, 16, 1, seed=5, spread=1.0)
    a = np.random.default_rng(0).normal(size=300)
    idx = np.arange(300)
    g = ClassGreedy(V, T, a, idx, tau=0.0)
    g.extend(50)
    first = list(g.picks)
    g.extend(100)
    assert g.picks[:50] == first and len(g.picks) == 150
    assert all(x >= y for x, y in zip(g.gains, g.gains[1:]))  # submodular: gains only fall
    h = ClassGreedy(V, T, a, idx, tau=0.0)
    h.extend(150)
    assert h.picks == g.picks and h.gains == g.gains


def test_merge_extends_truncated_classes():
    V, T, labels, Z = clustered(200, 8, 2, seed=2, spread=1.0)
    a = np.random.default_rng(1).normal(size=200) + (labels == 0) * 5.0  # class 0 dominates
    sources = {}
    for k in (0, 1):
        rows = np.flatnonzero(labels == k)
        sources[k] = ClassGreedy(V[rows], T[rows], a[rows], rows, 0.0)
        sources[k].extend(1)  # deliberately tiny initial quota
    merged = merge_sequences(sources, 150)
    picks, gains = plain_greedy(V, T, labels, a, 150, 0.0)
    assert merged.index.tolist() == picks.tolist() and merged.gain.tolist() == gains.tolist()


def test_invalid_rows_never_selected_and_mean_mode_is_exact_without_threshold():
    V, T, labels, Z = clustered(80, 8, 3, seed=9, spread=1.0)
    valid = np.ones(80, bool)
    valid[::5] = False
    emb = embedding_set(V, T, labels, Z, valid=valid)
    sel = ClipCovSelector().select(emb, 64)
    assert valid[sel.indices].all() and len(set(sel.indices.tolist())) == 64
    exact = ClipCovSelector(tau=-2.0, r_mode="exact").select(emb, 30)
    mean = ClipCovSelector(tau=-2.0, r_mode="mean").select(emb, 30)
    np.testing.assert_allclose(exact.terms["r"], mean.terms["r"], atol=1e-6)
