"""ClipCov: the exact greedy of the spec, class by class, streamed from (memory-mapped) embeddings.

Never materializes an n_k x n_k matrix (exact thresholded r is computed in row blocks), keeps memory
O(n + one class), and computes each class independently (see ``select/clipcov/greedy.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.select.clipcov import terms
from clipcov_cli.select.clipcov.greedy import ClassGreedy, merge_sequences
from clipcov_cli.select.methods._common import chunks

R_MODES = ("auto", "exact", "mean")
# auto: exact thresholded r while sum_k n_k^2 d stays under this many multiply-adds (~ a minute on 2 cores)
AUTO_EXACT_MACS = 2e12
NO_THRESHOLD_BELOW = -1.01  # |<v,t>| <= ~1 for unit float16 rows: tau below this thresholds nothing


@dataclass(frozen=True)
class ClassTerms:
    """The class' rows (float16 values held as float32) and the terms of a_j."""

    index: np.ndarray
    V: np.ndarray
    T: np.ndarray
    r: np.ndarray
    e: np.ndarray
    l: np.ndarray
    c: np.ndarray
    a: np.ndarray


def resolve_r_mode(r_mode: str, tau: float, sizes: np.ndarray, d: int) -> str:
    """The r computation actually used: 'mean' is exact when tau thresholds nothing."""
    if tau < NO_THRESHOLD_BELOW:
        return "mean"
    if r_mode == "auto":
        return "exact" if float(np.sum(sizes.astype(np.float64) ** 2)) * d <= AUTO_EXACT_MACS else "mean"
    return r_mode


class _RestartingClass:
    """A class' greedy sequence that keeps only (picks, gains) between extensions: extending reloads
    the rows and recomputes from the start with a larger quota (deterministic, same prefix), so
    memory holds one class at a time."""

    def __init__(self, load: Callable[[], ClassTerms], index: np.ndarray, tau: float, quota: int) -> None:
        self._load, self.index, self.tau = load, index, tau
        self.m = len(index)
        self.picks: list[int] = []
        self.gains: list[float] = []
        self._run(quota)

    @property
    def exhausted(self) -> bool:
        return len(self.picks) >= self.m

    def _run(self, quota: int) -> None:
        ct = self._load()
        g = ClassGreedy(ct.V, ct.T, ct.a, ct.index, self.tau)
        g.extend(quota)
        self.picks, self.gains = g.picks, g.gains

    def extend(self, count: int) -> None:
        self._run(len(self.picks) + count)


@dataclass(frozen=True)
class ClipCovSelector(Selector):
    name: ClassVar[str] = "clipcov"
    alpha: float = 2.0
    beta: float = 0.5
    gamma: float = 1.0
    tau: float = 0.0
    r_mode: str = "auto"
    notes: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.r_mode not in R_MODES:
            raise ClipcovError(f"unknown --r-mode {self.r_mode!r}: use one of {', '.join(R_MODES)}")

    def params(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "tau": self.tau, "r_mode": self.r_mode}

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        if embeddings.pseudo_label is None or embeddings.label_sim is None:
            raise ClipcovError("ClipCov needs pseudo-labels: run `clipcov embed --relabel` on the embeddings folder first")
        valid = np.flatnonzero(embeddings.valid)
        labels = np.asarray(embeddings.pseudo_label)[valid].astype(np.int64)
        order = np.argsort(labels, kind="stable")
        classes, starts = np.unique(labels[order], return_index=True)
        bounds = list(zip(classes.tolist(), starts.tolist(), list(starts[1:]) + [len(order)]))
        sizes = np.diff(np.append(starts, len(order)))
        sum_v, sum_t = self._sums(embeddings, valid)
        r_mode = resolve_r_mode(self.r_mode, self.tau, sizes, embeddings.d)
        self.notes.append(f"r computed with the '{r_mode}' method")
        n_valid = len(valid)

        cols = {name: np.full(embeddings.n, np.nan) for name in ("r", "e", "l", "c", "a")}

        def loader(rows: np.ndarray) -> Callable[[], ClassTerms]:
            def load() -> ClassTerms:
                ct = self._class_terms(embeddings, rows, sum_v, sum_t, n_valid, r_mode)
                for name in cols:  # O(n) record of every row's terms, for the output and summary
                    cols[name][rows] = getattr(ct, name)
                return ct

            return load

        sources = {}
        for k, s, e in bounds:
            rows = valid[order[s:e]]  # ascending example index within the class
            quota = min(len(rows), math.ceil(1.5 * budget * len(rows) / n_valid) + 16)
            sources[k] = _RestartingClass(loader(rows), rows, self.tau, quota)
        merged = merge_sequences(sources, budget, chunk_of=lambda g: max(16, len(g.picks)))
        idx = merged.index
        terms_out = {"class": np.asarray(embeddings.pseudo_label)[idx].astype(np.int64)}
        terms_out.update({name: arr[idx] for name, arr in cols.items()})
        return Selection(indices=idx, score=merged.gain, terms=terms_out, all_scores=cols["a"])

    @staticmethod
    def _sums(emb: EmbeddingSet, valid: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        sum_v = np.zeros(emb.d, np.float64)
        sum_t = np.zeros(emb.d, np.float64)
        mask = emb.valid
        for sl in chunks(emb.n):
            m = mask[sl]
            sum_v += np.asarray(emb.img[sl], np.float64)[m].sum(axis=0)
            sum_t += np.asarray(emb.txt[sl], np.float64)[m].sum(axis=0)
        return sum_v, sum_t

    def _class_terms(self, emb: EmbeddingSet, rows: np.ndarray, sum_v, sum_t, n_valid: int, r_mode: str) -> ClassTerms:
        # float16 values (exactly representable in float32) make the greedy's dot products exact
        V = np.asarray(emb.img[rows]).astype(np.float16).astype(np.float32)
        T = np.asarray(emb.txt[rows]).astype(np.float16).astype(np.float32)
        r = terms.representativeness_mean(V, T) if r_mode == "mean" else terms.representativeness_exact(V, T, self.tau)
        e = terms.alignment(V, T)
        l = np.asarray(emb.label_sim)[rows].astype(np.float64)
        c = terms.center_term(V, T, sum_v - V.astype(np.float64).sum(0), sum_t - T.astype(np.float64).sum(0), n_valid - len(rows))
        a = terms.modular_score(r, e, l, c, self.alpha, self.beta, self.gamma)
        return ClassTerms(rows, V, T, r, e, l, c, a)
