"""The exact ClipCov greedy: per-class sequences, merged by gain.

Classes do not interact in F, so the global greedy's next pick is always the best next pick of some
class: the global order is the k-way merge of the per-class greedy sequences by (gain desc, example
index asc). This holds for any gains (the merge takes the best *head* at each step); a class whose
computed sequence runs out during the merge is extended on demand, so truncation never changes the
result.

Within a class, :class:`ClassGreedy` is a lazy greedy when tau >= 0: every s >= 0, so F is
submodular and a stale gain is an upper bound of the current one (a max-heap of bounds; an entry is
re-evaluated, in batches, only when it reaches the top; the redundancy sum of a candidate is cached
and extended only by the members selected since its last evaluation). With tau < 0, s can be
negative, bounds are not valid, and the class falls back to recomputing every gain at every step
(still exact, vectorized).

Exactness against the plain greedy: the s values are exact (see ``terms.cross_dots``), redundancy
sums are kept *exactly* (an unevaluated float64 pair hi + lo, see ``terms.exact_add``) and a gain is
``a_j - fl(hi + lo) / n_k``: the correctly rounded exact sum, whatever order the terms were added in
or however they were grouped (the lazy kernel adds a whole block of members at once). Lazy and plain
therefore produce bit-identical gains and the same picks, ties included (lower example index first).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from clipcov_cli.select.clipcov import lazy_kernel
from clipcov_cli.select.clipcov.terms import cross_similarity, exact_add, marginal_gain



class ClassGreedy:
    """The greedy sequence of one class, computed lazily and extendable.

    ``V``, ``T``: the class' rows (float16 values; any float dtype), ``a``: modular scores,
    ``index``: the rows' global example indices (ascending), used for tie-breaking.
    """

    def __init__(self, V: np.ndarray, T: np.ndarray, a: np.ndarray, index: np.ndarray, tau: float) -> None:
        self.V, self.T = np.ascontiguousarray(V, np.float32), np.ascontiguousarray(T, np.float32)
        self.a = np.asarray(a, np.float64)
        self.index = np.asarray(index, np.int64)
        self.m = len(self.a)
        self.tau = float(tau)
        self.lazy = self.tau >= 0
        self._picks = np.empty(self.m, np.int64)
        self._gains = np.empty(self.m, np.float64)
        self._n = 0
        self.red_hi = np.zeros(self.m, np.float64)  # exact redundancy sums: hi + lo
        self.red_lo = np.zeros(self.m, np.float64)
        d = self.V.shape[1]
        if self.lazy:
            self.seen = np.zeros(self.m, np.int64)
            self.bnd = np.full(self.m, -1, np.int64)
            # keys -a_j with positions: index is ascending, so ties break by example index
            self._hk, self._hi = -self.a.copy(), np.arange(self.m, dtype=np.int64)
            lazy_kernel.heapify(self._hk, self._hi)
            self._size = self.m
            self._eps = lazy_kernel.float32_dot_error_bound(d)
            self._PV = np.zeros((1, d), np.float64)  # prefix sums of selected rows
            self._PT = np.zeros((1, d), np.float64)
            self.stats = np.zeros(6, np.int64)  # see lazy_kernel.lazy_extend
            self._SV = np.zeros((0, d), np.float32)  # selected rows, in selection order
            self._ST = np.zeros((0, d), np.float32)
        else:
            self.taken = np.zeros(self.m, bool)

    @property
    def picks(self) -> list[int]:
        return self._picks[: self._n].tolist()

    @property
    def gains(self) -> list[float]:
        return self._gains[: self._n].tolist()

    @property
    def exhausted(self) -> bool:
        return self._n >= self.m

    def extend(self, count: int) -> None:
        """Compute up to ``count`` more picks (fewer if the class runs out)."""
        target = min(self.m, self._n + count)
        if self.lazy:
            if self._SV.shape[0] < target:
                cap = min(self.m, max(target, 2 * self._SV.shape[0]))
                self._PV, self._PT = (_grow(P, cap + 1) for P in (self._PV, self._PT))
                self._SV, self._ST = (_grow(S, cap) for S in (self._SV, self._ST))
            self._size, self._n = lazy_kernel.lazy_extend(
                self.V, self.T, self.a, self.tau, self._eps, target, self._hk, self._hi, self._size, self.seen,
                self.bnd, self.red_hi, self.red_lo, self._PV, self._PT, self._SV, self._ST, self._picks,
                self._gains, self._n, self.stats)
        else:
            while self._n < target:
                self._step_plain()

    def _step_plain(self) -> None:
        gains = marginal_gain(self.a, self.red_hi + self.red_lo, self.m)
        gains = np.where(self.taken, -np.inf, gains)
        j = int(np.argmax(gains))  # first maximum: lowest local position = lowest example index
        self.taken[j] = True
        self._picks[self._n], self._gains[self._n] = j, gains[j]
        self._n += 1
        s = cross_similarity(self.V, self.T, self.V[j: j + 1], self.T[j: j + 1], self.tau)[:, 0]
        self.red_hi, self.red_lo = exact_add(self.red_hi, self.red_lo, s)


def _grow(A: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + A.shape[1:], A.dtype)
    out[: A.shape[0]] = A
    return out


@dataclass(frozen=True)
class MergedSequence:
    cls: np.ndarray  # (B,) class of each pick
    local: np.ndarray  # (B,) position within its class
    index: np.ndarray  # (B,) global example index
    gain: np.ndarray  # (B,) marginal gain


def merge_sequences(classes: dict[int, ClassGreedy], budget: int, chunk_of=lambda g: max(16, len(g.picks))) -> MergedSequence:
    """k-way merge of per-class sequences by (gain desc, example index asc), extending on demand."""
    heads: list[tuple[float, int, int, int]] = []  # (-gain, example index, class, position)
    for k, g in classes.items():
        if not g.picks and not g.exhausted:
            g.extend(chunk_of(g))
        if g.picks:
            heads.append((-g.gains[0], int(g.index[g.picks[0]]), k, 0))
    heapq.heapify(heads)
    out_cls, out_local, out_idx, out_gain = [], [], [], []
    while heads and len(out_idx) < budget:
        neg, idx, k, pos = heapq.heappop(heads)
        g = classes[k]
        out_cls.append(k), out_local.append(g.picks[pos]), out_idx.append(idx), out_gain.append(-neg)
        nxt = pos + 1
        if nxt >= len(g.picks) and not g.exhausted:
            g.extend(chunk_of(g))
        if nxt < len(g.picks):
            heapq.heappush(heads, (-g.gains[nxt], int(g.index[g.picks[nxt]]), k, nxt))
    return MergedSequence(np.array(out_cls, np.int64), np.array(out_local, np.int64),
                          np.array(out_idx, np.int64), np.array(out_gain, np.float64))


def plain_greedy(V: np.ndarray, T: np.ndarray, labels: np.ndarray, a: np.ndarray, budget: int, tau: float) -> tuple[np.ndarray, np.ndarray]:
    """Reference: recompute every candidate's gain over all classes at every step, pick the max
    (ties: lower example index). O(B n d); for tests on small inputs."""
    n = len(a)
    sizes = np.bincount(labels)
    hi, lo = np.zeros(n, np.float64), np.zeros(n, np.float64)  # exact redundancy sums
    taken = np.zeros(n, bool)
    picks, gains = [], []
    for _ in range(budget):
        g = np.where(taken, -np.inf, marginal_gain(a, hi + lo, sizes[labels]))
        j = int(np.argmax(g))
        picks.append(j), gains.append(float(g[j]))
        taken[j] = True
        same = labels == labels[j]
        s = cross_similarity(V[same], T[same], V[j: j + 1], T[j: j + 1], tau)[:, 0]
        hi[same], lo[same] = exact_add(hi[same], lo[same], s)
    return np.array(picks, np.int64), np.array(gains, np.float64)
