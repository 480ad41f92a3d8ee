"""NegCLIPLoss baseline (Wang et al. 2024): the CLIP loss of each pair against a random batch,
normalized by its negatives, averaged over shuffles; keep the top B.

The shuffles are drawn by key (repeat r orders the rows by ``keyed_draws(seed, stream=r)``, ties by
key) and each batch is scored in that order, so the batches, their scores and the selection depend on
the seed and the keys only, never on the order the rows come in.

score_i = S_ii - (tau/2) * [logsumexp_j(S_ij / tau) + logsumexp_j(S_ji / tau)],  S = F G^T per batch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.select.methods._common import order_by_draw, top_b
from clipcov_cli.utils.keyed import key_hashes, keyed_draws


def _logsumexp(x: np.ndarray, axis: int) -> np.ndarray:
    m = x.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def negclip_batch_scores(F: np.ndarray, G: np.ndarray, tau: float) -> np.ndarray:
    """The score of every pair of one batch (F image rows, G caption rows), in float64."""
    S = np.asarray(F, np.float64) @ np.asarray(G, np.float64).T
    return np.diag(S) - (tau / 2.0) * (_logsumexp(S / tau, axis=1) + _logsumexp(S / tau, axis=0))


@dataclass(frozen=True)
class NegClipLossSelector(Selector):
    name: ClassVar[str] = "negclip-loss"
    flags: ClassVar[dict] = {"batch": "--batch-size"}
    batch: int = 1024
    repeats: int = 5
    temperature: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if self.batch < 2 or self.repeats < 1 or self.temperature <= 0:
            raise ClipcovError("negclip-loss needs --batch >= 2, --repeats >= 1 and --temperature > 0")

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        valid = np.flatnonzero(embeddings.valid)
        hashes = np.zeros(embeddings.n, np.uint64)
        hashes[valid] = key_hashes(embeddings.keys[valid])
        total = np.zeros(embeddings.n, np.float64)
        for r in range(self.repeats):
            perm = order_by_draw(valid, keyed_draws(hashes, self.seed, stream=r), embeddings.keys)
            for s in range(0, len(perm), self.batch):
                b = perm[s: s + self.batch]  # scored in this order (the sums in logsumexp follow it)
                rows = np.sort(b)  # read in ascending order (memory maps), then put in the batch's order
                back = np.searchsorted(rows, b)
                F, G = np.asarray(embeddings.img[rows])[back], np.asarray(embeddings.txt[rows])[back]
                total[b] += negclip_batch_scores(F, G, self.temperature)
        score = np.where(embeddings.valid, total / self.repeats, np.nan)
        idx = top_b(np.nan_to_num(score, nan=-np.inf), embeddings.keys, embeddings.valid, budget)
        return Selection(indices=idx, score=score[idx], all_scores=score)
