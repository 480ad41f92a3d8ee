"""SemDeDup baseline (Abbas et al. 2023): semantic de-duplication on image embeddings.

1. Spherical k-means on the image embeddings (faiss when installed, else numpy), ``clusters``
   (default ~ n/1000, at least 1), ``iterations`` (20), seeded.
2. Within each cluster, order members by distance to the centroid, farthest first. Each member's
   statistic is its largest cosine to any earlier member of that order (``-inf`` for the first).
3. A member is a duplicate when that cosine exceeds 1 - eps. Keeping exactly B members is a search
   over eps; since the statistic does not depend on eps, the search is exact and amounts to keeping
   the B members with the smallest statistic. Ties at the budget edge are broken by key (ascending).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.select.methods._common import chunks, top_b

BLOCK = 2048


def _normalize(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def spherical_kmeans(X: np.ndarray, k: int, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(centroids (k, d), assignment (n,)) by cosine; empty clusters are re-seeded from the points
    farthest from their centroid. Uses faiss when importable."""
    X = np.asarray(X, np.float32)
    try:
        import faiss  # type: ignore

        km = faiss.Kmeans(X.shape[1], k, niter=iterations, seed=seed, spherical=True, verbose=False)
        km.train(X)
        _, assign = km.index.search(X, 1)
        return km.centroids, assign[:, 0].astype(np.int64)
    except ImportError:
        pass
    rng = np.random.default_rng(seed)
    C = X[rng.choice(len(X), size=k, replace=False)].copy()
    assign = np.zeros(len(X), np.int64)
    best = np.zeros(len(X), np.float32)
    for _ in range(iterations):
        for sl in chunks(len(X)):
            sim = X[sl] @ C.T
            assign[sl] = sim.argmax(axis=1)
            best[sl] = sim[np.arange(len(sim)), assign[sl]]
        sums = np.zeros_like(C)
        np.add.at(sums, assign, X)
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if len(empty):
            far = np.argsort(best, kind="stable")[: len(empty)]
            sums[empty] = X[far]
        C = _normalize(sums)
    for sl in chunks(len(X)):
        assign[sl] = (X[sl] @ C.T).argmax(axis=1)
    return C, assign


def max_cosine_to_earlier(X: np.ndarray) -> np.ndarray:
    """For rows in order, the largest cosine of each row to any earlier row (-inf for the first)."""
    n = len(X)
    out = np.full(n, -np.inf)
    for s in range(0, n, BLOCK):
        Bk = X[s: s + BLOCK]
        sim = (Bk @ X[: s + len(Bk)].T).astype(np.float64)  # (b, s + b)
        cols = np.arange(s + len(Bk))[None, :]
        rows = np.arange(s, s + len(Bk))[:, None]
        sim[cols >= rows] = -np.inf  # only earlier members
        out[s: s + len(Bk)] = sim.max(axis=1)
    return out


@dataclass(frozen=True)
class SemDeDupSelector(Selector):
    name: ClassVar[str] = "semdedup"
    clusters: int | None = None  # default: round(n / 1000), at least 1
    iterations: int = 20
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.clusters is not None and self.clusters < 1) or self.iterations < 1:
            raise ClipcovError("semdedup needs --clusters >= 1 and --iterations >= 1")

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        valid = np.flatnonzero(embeddings.valid)
        X = _normalize(np.asarray(embeddings.img[valid], np.float32))
        k = min(len(valid), self.clusters or max(1, round(len(valid) / 1000)))
        C, assign = spherical_kmeans(X, k, self.iterations, self.seed)
        stat = np.full(embeddings.n, np.nan)
        cluster_of = np.full(embeddings.n, -1, np.int64)
        cluster_of[valid] = assign
        for c in range(k):
            members = np.flatnonzero(assign == c)
            if len(members) == 0:
                continue
            dist = 1.0 - X[members] @ C[c]
            order = members[np.lexsort((valid[members], -dist))]  # farthest first; ties by row
            stat[valid[order]] = max_cosine_to_earlier(X[order])
        score = -stat  # higher = less duplicated
        idx = top_b(np.nan_to_num(score, nan=-np.inf), embeddings.keys, embeddings.valid, budget)
        return Selection(indices=idx, score=score[idx], all_scores=score,
                         terms={"max_cos_earlier": stat[idx], "cluster": cluster_of[idx]})
