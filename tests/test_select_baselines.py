"""The baselines: exact counts, seeds, SemDeDup's duplicates, NegCLIPLoss' formula, CLIP-score ties."""

from __future__ import annotations

import numpy as np
import pytest

from clipcov_cli.select.methods import make_selector
from clipcov_cli.select.methods.negclip import negclip_batch_scores
from clipcov_cli.select.methods.semdedup import max_cosine_to_earlier
from tests.select_helpers import clustered, embedding_set


@pytest.fixture
def emb():
    V, T, labels, Z = clustered(300, 16, 4, seed=2, spread=1.0)
    return embedding_set(V, T, labels, Z)


@pytest.mark.parametrize("method", ["random", "clip-score", "semdedup", "negclip-loss"])
def test_exact_counts_and_determinism(emb, method):
    a = make_selector(method, seed=3, batch=32).select(emb, 77)
    b = make_selector(method, seed=3, batch=32).select(emb, 77)
    assert len(a.indices) == 77 == len(set(a.indices.tolist()))
    assert a.indices.tolist() == b.indices.tolist()
    if method in ("random", "negclip-loss"):
        c = make_selector(method, seed=4, batch=32).select(emb, 77)
        assert a.indices.tolist() != c.indices.tolist()


def test_clip_score_top_b_with_key_ties():
    V, T, labels, Z = clustered(20, 8, 2, seed=0)
    T = T.copy()
    T[[4, 9, 13]] = T[2]  # rows 2, 4, 9, 13: identical caption...
    V = V.copy()
    V[[4, 9, 13]] = V[2]  # ...and image: tied scores
    keys = np.array([f"k{(19 - i):02d}" for i in range(20)])  # key order reverses row order
    e = embedding_set(V, T, labels, Z, keys=keys)
    score = np.einsum("ij,ij->i", V.astype(np.float32), T.astype(np.float32))
    rank_of_tie = sorted(np.flatnonzero(score > score[2])).__len__()
    budget = rank_of_tie + 2
    sel = make_selector("clip-score").select(e, budget)
    tied_kept = [i for i in sel.indices.tolist() if i in (2, 4, 9, 13)]
    assert sorted(tied_kept) == [9, 13]  # smallest keys among the tie: k10 (row 9), k06 (row 13)
    assert (score[sel.indices[:-2]] > score[2]).all()


def test_negclip_formula_matches_brute_force():
    rng = np.random.default_rng(0)
    F = rng.normal(size=(6, 4)); F /= np.linalg.norm(F, axis=1, keepdims=True)
    G = rng.normal(size=(6, 4)); G /= np.linalg.norm(G, axis=1, keepdims=True)
    tau = 0.07
    got = negclip_batch_scores(F, G, tau)
    for i in range(6):
        S = [[float(F[a] @ G[b]) for b in range(6)] for a in range(6)]
        row = np.log(sum(np.exp(S[i][j] / tau) for j in range(6)))
        col = np.log(sum(np.exp(S[j][i] / tau) for j in range(6)))
        assert got[i] == pytest.approx(S[i][i] - tau / 2 * (row + col), rel=1e-9)


def test_semdedup_drops_planted_duplicates_first():
    V, T, labels, Z = clustered(200, 16, 4, seed=5, spread=2.0)
    V = V.copy()
    V[150:200] = V[0:50]  # 50 exact duplicates of rows 0..49
    e = embedding_set(V, T, labels, Z)
    sel = make_selector("semdedup", clusters=3).select(e, 150)
    kept = set(sel.indices.tolist())
    for i in range(50):  # exactly one of each duplicate pair is dropped
        assert (i in kept) != (150 + i in kept)
    X = np.eye(3)[[0, 1, 0, 2]].astype(np.float32)
    assert max_cosine_to_earlier(X).tolist() == [-np.inf, 0.0, 1.0, 0.0]


def test_random_draws_are_the_documented_keyed_hash():
    """``utils/keyed.py`` as docs/method.md gives it, one key at a time in Python integers: FNV-1a over
    the code points, the length mixed in, SplitMix64; the draw mixes in the seed and stream."""
    from clipcov_cli.utils.keyed import key_hashes, keyed_draws

    M = 2**64

    def mix(z):
        z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M
        z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M
        return z ^ (z >> 31)

    keys = np.array(["000000017", "k5", "", "caf\u00e9", "a" * 20])
    want = []
    for k in keys:
        h = 0xCBF29CE484222325
        for ch in k:
            h = ((h ^ ord(ch)) * 0x100000001B3) % M
        want.append(mix(h ^ len(k)))
    assert key_hashes(keys).tolist() == want
    salt = mix((mix(3) + 0x9E3779B97F4A7C15 * 2) % M)  # seed 3, stream 1
    assert keyed_draws(key_hashes(keys), 3, stream=1).tolist() == [mix(h ^ salt) for h in want]
