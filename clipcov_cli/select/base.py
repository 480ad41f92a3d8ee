"""The one interface every selection method implements.

A method is a :class:`Selector` subclass with one hook, :meth:`Selector.select`, that takes the
corpus' embeddings and a budget (a resolved count) and returns a :class:`Selection`. Methods are
siblings: ClipCov and each baseline live in their own module and share nothing but this interface.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Mapping

import numpy as np


@dataclass(frozen=True)
class EmbeddingSet:
    """What a method sees of the corpus; rows are examples, aligned across every array.

    ``img`` and ``txt`` may be float16 memory maps (rows unit-norm). ``valid`` marks the rows a
    method may pick (NaN / zero-norm / off-unit-norm rows are excluded before a method runs). ``pseudo_label`` and
    ``label_sim`` come from ``labels/`` (ClipCov needs them; baselines may ignore them).
    """

    img: np.ndarray  # (n, d)
    txt: np.ndarray  # (n, d)
    keys: np.ndarray  # (n,) str
    valid: np.ndarray  # (n,) bool
    pseudo_label: np.ndarray | None = None  # (n,) int64 class index
    label_sim: np.ndarray | None = None  # (n,) float32: <t_i, z_{y_i}>
    num_classes: int | None = None
    prepared: object | None = None  # method-specific data made while reading (ClipCov: GroupedRows)

    @property
    def n(self) -> int:
        return int(self.img.shape[0])

    @property
    def d(self) -> int:
        return int(self.img.shape[1])

    @property
    def n_valid(self) -> int:
        return int(np.count_nonzero(self.valid))


@dataclass(frozen=True)
class Selection:
    """The result of a method: selected row indices in rank order, with their score.

    ``score`` is the marginal gain (ClipCov) or the method's score for each selected row, in rank
    order. ``terms`` holds extra per-selected-row columns written to ``selection.parquet`` (for
    ClipCov: r, e, l, c, a and the class). ``all_scores`` optionally scores every row (NaN where not
    defined) so the summary can compare kept against dropped.
    """

    indices: np.ndarray  # (B,) int64, rank order
    score: np.ndarray  # (B,) float64
    terms: Mapping[str, np.ndarray] = field(default_factory=dict)
    all_scores: np.ndarray | None = None


class Selector(ABC):
    """Base class of selection methods: one hook, :meth:`select`.

    Subclasses are frozen dataclasses holding their parameters; ``name`` is the ``--method`` value.
    """

    name: ClassVar[str]

    @abstractmethod
    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        """Pick exactly ``budget`` valid rows (``budget <= embeddings.n_valid``)."""

    def select_keeping(self, embeddings: EmbeddingSet, budget: int, kept: np.ndarray) -> Selection:
        """Pick exactly ``budget`` valid rows of which the rows ``kept`` (distinct valid row indices,
        in key order; ``len(kept) <= budget``) are all: ``select --keep``. The kept rows come first in
        rank order, the method fills the rest of the budget.

        The default, right for a method that scores each row on its own (random, clip-score,
        negclip-loss) and the simplest correct one for the others: :meth:`select` chooses
        ``budget - len(kept)`` rows among the rows not kept (kept rows hidden from it). Kept rows get a
        NaN score and NaN (float) or -1 (integer) terms. A method whose choice depends on what is
        already in the subset overrides this to start from the kept rows (ClipCov: its greedy starts
        with them as already selected)."""
        kept = np.asarray(kept, np.int64)
        rest = budget - len(kept)
        if rest == 0:
            return Selection(indices=kept, score=np.full(len(kept), np.nan))
        from dataclasses import replace

        valid = np.asarray(embeddings.valid).copy()
        valid[kept] = False
        tail = self.select(replace(embeddings, valid=valid), rest)
        terms = {name: np.concatenate([np.full(len(kept), np.nan if np.issubdtype(np.asarray(col).dtype, np.floating)
                                                else -1, np.asarray(col).dtype), np.asarray(col)])
                 for name, col in tail.terms.items()}
        return Selection(indices=np.concatenate([kept, np.asarray(tail.indices, np.int64)]),
                         score=np.concatenate([np.full(len(kept), np.nan), np.asarray(tail.score, np.float64)]),
                         terms=terms, all_scores=tail.all_scores)

    def warm_up(self) -> None:
        """Optional: start loading what :meth:`select` will need, in the background, while the caller
        reads the embeddings. Never changes a result; by default it does nothing."""

    def params(self) -> dict:
        """The method's parameters, recorded in the manifest."""
        from dataclasses import asdict, is_dataclass

        return asdict(self) if is_dataclass(self) else {}
