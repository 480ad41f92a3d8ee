"""CLIP-score baseline (DataComp's CLIP-score filter at a fraction): the B pairs with the highest
image-caption cosine; ties broken by key so exactly B come out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.select.methods._common import rowwise_dot, top_b


@dataclass(frozen=True)
class ClipScoreSelector(Selector):
    name: ClassVar[str] = "clip-score"

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        score = rowwise_dot(embeddings.img, embeddings.txt)
        idx = top_b(score, embeddings.keys, embeddings.valid, budget)
        return Selection(indices=idx, score=score[idx].astype(float), all_scores=score)
