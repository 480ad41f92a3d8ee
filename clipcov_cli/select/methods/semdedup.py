"""SemDeDup baseline (Abbas et al. 2023): semantic de-duplication on image embeddings.

1. Spherical k-means on the image embeddings (faiss, through :mod:`clipcov_cli.utils.kmeans`, the
   module ``embed --classes kmeans`` uses), ``clusters`` (default ~ n/1000, at least 1),
   ``iterations`` (20), seeded. It trains on every valid row in canonical order (seeded key hash,
   then key), so the clusters do not depend on the order the rows come in.
2. Within each cluster, order members by distance to the centroid, farthest first (ties by key).
   Each member's statistic is its largest cosine to any earlier member of that order (``-inf`` for
   the first).
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
from clipcov_cli.select.methods._common import top_b
from clipcov_cli.utils.kmeans import normalize, spherical_kmeans

BLOCK = 2048


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
        X = normalize(np.asarray(embeddings.img[valid], np.float32))
        keys = np.asarray(embeddings.keys)[valid].astype(str)
        k = min(len(valid), self.clusters or max(1, round(len(valid) / 1000)))
        C, assign = spherical_kmeans(X, keys, k, self.iterations, self.seed)
        stat = np.full(embeddings.n, np.nan)
        cluster_of = np.full(embeddings.n, -1, np.int64)
        cluster_of[valid] = assign
        for c in range(k):
            members = np.flatnonzero(assign == c)
            if len(members) == 0:
                continue
            dist = 1.0 - X[members] @ C[c]
            order = members[np.lexsort((keys[members], -dist))]  # farthest first; ties by key
            stat[valid[order]] = max_cosine_to_earlier(X[order])
        score = -stat  # higher = less duplicated
        idx = top_b(np.nan_to_num(score, nan=-np.inf), embeddings.keys, embeddings.valid, budget)
        return Selection(indices=idx, score=score[idx], all_scores=score,
                         terms={"max_cos_earlier": stat[idx], "cluster": cluster_of[idx]})
