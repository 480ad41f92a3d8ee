"""Random baseline: uniform without replacement, seeded, drawn by key.

Each key gets a seeded draw (``keyed_draws``: a hash of the seed and the key), and the ``budget``
valid rows with the smallest draws are kept, in that order (ties by key). The subset is a uniform
random one, and it depends only on the seed and the keys, never on the order the rows come in."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.utils.keyed import key_hashes, keyed_draws


@dataclass(frozen=True)
class RandomSelector(Selector):
    name: ClassVar[str] = "random"
    seed: int = 0

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        valid = np.flatnonzero(embeddings.valid)
        draws = keyed_draws(key_hashes(embeddings.keys[valid]), self.seed)
        keys = np.asarray(embeddings.keys)[valid].astype(str)
        if budget < len(valid):  # only the rows at or below the budget-th draw are sorted
            cut = np.partition(draws, budget - 1)[budget - 1]
            near = np.flatnonzero(draws <= cut)
        else:
            near = np.arange(len(valid))
        near = near[np.lexsort((keys[near], draws[near]))][:budget]
        u = draws[near].astype(np.float64) / 2.0**64  # the draw, as a uniform number in [0, 1)
        return Selection(indices=valid[near].astype(np.int64), score=u)
