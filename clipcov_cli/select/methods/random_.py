"""Random baseline: uniform without replacement, seeded."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from clipcov_cli.select.base import EmbeddingSet, Selection, Selector


@dataclass(frozen=True)
class RandomSelector(Selector):
    name: ClassVar[str] = "random"
    seed: int = 0

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        rng = np.random.default_rng(self.seed)
        idx = rng.choice(np.flatnonzero(embeddings.valid), size=budget, replace=False).astype(np.int64)
        return Selection(indices=idx, score=np.full(budget, np.nan))
