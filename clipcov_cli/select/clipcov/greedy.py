"""The exact ClipCov greedy: per-class sequences, merged by gain.

Classes do not interact in F, so the global greedy's next pick is always the best next pick of some
class: the global order is the k-way merge of the per-class greedy sequences by (gain desc, tie rank
asc; the selector's tie rank is the key rank, and a class' rows come in key order). This holds for any gains (the merge takes the best *head* at each step); a class whose
computed sequence runs out during the merge is extended on demand, so truncation never changes the
result.

Within a class, :class:`ClassGreedy` is a lazy greedy when tau >= 0: every s >= 0, so F is
submodular and a stale gain is an upper bound of the current one (a max-heap of bounds; an entry is
re-evaluated, in batches, only when it reaches the top; the redundancy sum of a candidate is cached
and extended only by the members selected since its last evaluation). The kernel
(``lazy_kernel.lazy_extend``) stops when a batch needs its int8 screening products, which
:meth:`ClassGreedy._screen_batch` computes (``imatmul``), and resumes. With tau < 0, s can be
negative, bounds are not valid, and the class falls back to recomputing every gain at every step
(still exact, vectorized).

Exactness against the plain greedy: the s values are exact (see ``terms.cross_dots``), redundancy
sums are kept *exactly* (an unevaluated float64 pair hi + lo, see ``terms.exact_add``) and a gain is
``a_j - fl(hi + lo) / n_k``: the correctly rounded exact sum, whatever order the terms were added in
or however they were grouped (the lazy kernel adds a whole block of members at once). Lazy and plain
therefore produce bit-identical gains and the same picks, ties included (lower position first: the
selector hands each class its rows in key order, so the lower key).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from clipcov_cli.select.clipcov import lazy_kernel
from clipcov_cli.select.clipcov.imatmul import ThreadShare, int8_products
from clipcov_cli.select.clipcov.scan import F16_TO_F32, as_f16_bits, to_float32
from clipcov_cli.select.clipcov.terms import cross_similarity, exact_add, marginal_gain


class ClassGreedy:
    """The greedy sequence of one class, computed lazily and extendable.

    ``V``, ``T``: the class' rows, float16 bit patterns (uint16) or float16 values in any float dtype;
    ``a``: modular scores, ``index``: the rows' global tie ranks (ascending: key ranks), for the merge;
    ``row_stats``: the rows' screening statistics (``lazy_kernel.column_sums_and_stats``) if the caller
    has them; ``threads``: the torch threads to use for the int8 products (applied before each batch);
    ``lookahead_min``: the kernel's look-ahead threshold (a tuning constant; tests lower it).
    """

    def __init__(self, V: np.ndarray, T: np.ndarray, a: np.ndarray, index: np.ndarray, tau: float,
                 row_stats: tuple | None = None, threads: ThreadShare | None = None,
                 lookahead_min: int = lazy_kernel.LOOKAHEAD_MIN) -> None:
        self.U, self.W = _bits(V), _bits(T)
        self.a = np.asarray(a, np.float64)
        self.index = np.asarray(index, np.int64)
        self.m = len(self.a)
        self.tau = float(tau)
        self.threads = threads
        self.lookahead_min = int(lookahead_min)
        self._broken = False  # a batch failed half-way: the state is not consistent any more
        self.lazy = self.tau >= 0
        self._picks = np.empty(self.m, np.int64)
        self._gains = np.empty(self.m, np.float64)
        self._n = 0
        self.red_hi = np.zeros(self.m, np.float64)  # exact redundancy sums: hi + lo
        self.red_lo = np.zeros(self.m, np.float64)
        self.stats = np.zeros(lazy_kernel.STATS, np.int64)  # see lazy_kernel.lazy_extend
        if self.lazy:
            self._init_lazy(row_stats or lazy_kernel.column_sums_and_stats(self.U, self.W)[2])
        else:
            self.taken = np.zeros(self.m, bool)

    def _init_lazy(self, row_stats: tuple) -> None:
        d = self.U.shape[1]
        self.seen = np.zeros(self.m, np.int64)
        self.bnd = np.full(self.m, -1, np.int64)
        # keys -a_j with positions: ties break by position (the rows come in key order: by key)
        self._hk, self._hi = -self.a.copy(), np.arange(self.m, dtype=np.int64)
        lazy_kernel.heapify(self._hk, self._hi)
        max_v, max_t, norm_v, norm_t = row_stats
        # exact <v_j, PT> + <t_j, PV> at j's last evaluation, as hi + lo (see lazy_kernel._linear_bound_key)
        self._bh, self._bl = np.zeros(self.m, np.float64), np.zeros(self.m, np.float64)
        gamma = 2.0 * (2 * d) * 2.0 ** -53 / (1 - (2 * d) * 2.0 ** -53)
        self._norms = np.zeros(lazy_kernel.NORMS)  # max |v|, max |t|, gamma, |PV|, |PT| (the last two: running)
        self._norms[[lazy_kernel.NORM_V, lazy_kernel.NORM_T, lazy_kernel.NORM_GAMMA]] = norm_v, norm_t, gamma
        self._inv = np.array([lazy_kernel.quantization(max_v), lazy_kernel.quantization(max_t)])
        err = lazy_kernel.screening_error(d, self._inv[0], self._inv[1], norm_v, norm_t)
        self._ctl = np.zeros(lazy_kernel.CTL, np.int64)
        self._ctl[lazy_kernel.CTL_SIZE] = self.m
        self._ctl[lazy_kernel.CTL_CUT] = lazy_kernel.screening_cut(self.tau, err, self._inv[0], self._inv[1])
        self._ctl[lazy_kernel.CTL_LOOKAHEAD] = self.lookahead_min
        self._PV = np.zeros(d, np.float64)  # sums of the selected rows (exact)
        self._PT = np.zeros(d, np.float64)
        self._QV = np.zeros((0, d), np.int8)  # selected rows quantized, in selection order
        self._QT = np.zeros((0, d), np.int8)
        B = lazy_kernel.BATCH_CAP
        self._bidx = np.empty(B, np.int64)
        self._cuts = np.empty(lazy_kernel.MAX_SEGMENTS + 2, np.int64)
        self._seg_rows = np.empty(lazy_kernel.MAX_SEGMENTS + 2, np.int64)
        self._seg_off = np.full(lazy_kernel.MAX_SEGMENTS + 2, -1, np.int64)
        self._xbuf = self._ybuf = np.zeros(0, np.int32)  # products of flagged blocks (grown on demand)
        self._Qbv, self._Qbt = np.empty((B, d), np.int8), np.empty((B, d), np.int8)

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
        if self._broken:
            raise RuntimeError("this class' greedy failed during a batch and cannot be extended")
        target = min(self.m, self._n + count)
        if not self.lazy:
            if self._n < target:
                V, T = (to_float32(X, F16_TO_F32) for X in (self.U, self.W))
                while self._n < target:
                    self._step_plain(V, T)
            return
        if self._QV.shape[0] < target:
            cap = min(self.m, max(target, 2 * self._QV.shape[0]))
            self._QV, self._QT = (_grow(S, cap) for S in (self._QV, self._QT))
        while lazy_kernel.lazy_extend(
                self.U, self.W, self.a, self.tau, target, self._hk, self._hi, self.seen, self.bnd, self._bh,
                self._bl, self.red_hi, self.red_lo, self._PV, self._PT, self._norms, self._QV, self._QT, self._inv,
                self._picks, self._gains, self.stats, self._ctl, self._bidx, self._cuts, self._seg_rows,
                self._seg_off, self._xbuf, self._ybuf, self._Qbv, self._Qbt):
            if self.threads is not None:
                self.threads.apply()
            try:
                self._screen_batch()
            except BaseException:
                self._broken = True
                raise
        self._n = int(self._ctl[lazy_kernel.CTL_PICKS])

    def _screen_batch(self) -> None:
        """The int8 products of the pending batch, block by block; a block whose products are all above
        the cut is certified (no pair at or below tau), the others are handed to the kernel."""
        cut = self._ctl[lazy_kernel.CTL_CUT]
        nseg = int(self._ctl[lazy_kernel.CTL_SEGMENTS])
        used = 0
        for i in range(nseg):
            rows, c0, c1 = int(self._seg_rows[i]), int(self._cuts[i]), int(self._cuts[i + 1])
            low = False  # some product at or below the cut?
            for s in range(c0, c1, SCREEN_COLUMNS):  # column blocks that stay in cache
                e = min(c1, s + SCREEN_COLUMNS)
                if (int8_products(self._Qbv[:rows], self._QT[s:e]).min() <= cut  # ~ <v_c, t_l> / (s_v s_t)
                        or int8_products(self._Qbt[:rows], self._QV[s:e]).min() <= cut):  # ~ <t_c, v_l> / ...
                    low = True
                    break
            if not low:
                self._seg_off[i] = -1
                continue
            X = int8_products(self._Qbv[:rows], self._QT[c0:c1])
            Y = int8_products(self._Qbt[:rows], self._QV[c0:c1])
            need = used + X.size
            if self._xbuf.size < need:
                self._xbuf, self._ybuf = (_grow(buf, max(need, 2 * buf.size)) for buf in (self._xbuf, self._ybuf))
            self._xbuf[used: need] = X.ravel()
            self._ybuf[used: need] = Y.ravel()
            self._seg_off[i] = used
            used = need

    def _step_plain(self, V: np.ndarray, T: np.ndarray) -> None:
        gains = marginal_gain(self.a, self.red_hi + self.red_lo, self.m)
        gains = np.where(self.taken, -np.inf, gains)
        j = int(np.argmax(gains))  # first maximum: lowest local position (rows in key order: lowest key)
        self.taken[j] = True
        self._picks[self._n], self._gains[self._n] = j, gains[j]
        self._n += 1
        s = cross_similarity(V, T, V[j: j + 1], T[j: j + 1], self.tau)[:, 0]
        self.red_hi, self.red_lo = exact_add(self.red_hi, self.red_lo, s)


SCREEN_COLUMNS = 4096  # members per int8 product (their rows stay in cache)


def _bits(X: np.ndarray) -> np.ndarray:
    """Rows as float16 bit patterns: uint16 arrays are taken as such, floats are rounded to float16."""
    return np.ascontiguousarray(X) if X.dtype == np.uint16 else as_f16_bits(X)


def _grow(A: np.ndarray, rows: int) -> np.ndarray:
    out = np.zeros((rows,) + A.shape[1:], A.dtype)
    out[: A.shape[0]] = A
    return out


@dataclass(frozen=True)
class MergedSequence:
    cls: np.ndarray  # (B,) class of each pick
    local: np.ndarray  # (B,) position within its class
    index: np.ndarray  # (B,) global tie rank of each pick (the selector's: key rank)
    gain: np.ndarray  # (B,) marginal gain


def merge_sequences(classes: dict[int, ClassGreedy], budget: int, chunk_of=lambda g: max(16, len(g.picks)),
                    extend_many=None) -> MergedSequence:
    """k-way merge of per-class sequences by (gain desc, tie rank asc), extending on demand.

    A class' sequence is a greedy's, so with tau >= 0 (F submodular) its gains never rise, and equal
    gains come in ascending index: each sequence is already in merge order, and the merge is the top
    ``budget`` of all computed picks in that order, provided no class runs out before the cut (then
    it is extended and the cut taken again; ``extend_many`` runs a round's extensions, ``[(g, count),
    ...]``, e.g. in parallel). A sequence not in merge order (tau < 0) makes it a heap merge."""
    extend_many = extend_many or (lambda items: [g.extend(c) for g, c in items])
    extend_many([(g, chunk_of(g)) for g in classes.values() if not g.picks and not g.exhausted])
    keys = sorted(classes)
    seqs: dict[int, tuple] = {}  # class -> (gains, example indices, picks) as arrays
    changed = keys
    while True:
        for k in changed:
            g = classes[k]
            picks = np.asarray(g.picks, np.int64)
            seqs[k] = (np.asarray(g.gains, np.float64), np.asarray(g.index)[picks], picks)
            if not _in_merge_order(*seqs[k][:2]):
                return _heap_merge(classes, budget, chunk_of)
        gains, index, picks = ([seqs[k][i] for k in keys] for i in range(3))
        lengths = np.array([len(g) for g in gains], np.int64)
        cls = np.repeat(np.array(keys, np.int64), lengths)
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        all_gain, all_index = np.concatenate(gains + [np.zeros(0)]), np.concatenate(index + [np.zeros(0, np.int64)])
        top, last = _top_in_merge_order(all_gain, all_index, budget)
        # a class every computed pick of which is taken may hold the next ones: extend it unless the cut
        # fell on its last pick (then its next pick comes after the cut)
        taken = np.bincount(np.searchsorted(keys, cls[top]), minlength=len(keys))
        cut_at = (int(cls[last]), int(pos[last])) if len(top) == budget and budget > 0 else None
        changed = [k for k, n_taken, n in zip(keys, taken, lengths)
                   if n_taken == n and not classes[k].exhausted and cut_at != (k, n - 1)]
        if not changed:
            top = top[np.lexsort((all_index[top], -all_gain[top]))]
            all_picks = np.concatenate(picks + [np.zeros(0, np.int64)])
            return MergedSequence(cls[top], all_picks[top], all_index[top], all_gain[top])
        before = [len(classes[k].picks) for k in changed]
        extend_many([(classes[k], chunk_of(classes[k])) for k in changed])
        if any(len(classes[k].picks) <= n for k, n in zip(changed, before)):
            raise RuntimeError("a class' sequence did not grow when extended")


def _top_in_merge_order(gain: np.ndarray, index: np.ndarray, budget: int) -> tuple[np.ndarray, int]:
    """The positions of the first ``budget`` entries in (gain desc, index asc) order, unordered, and the
    position of the last of them in that order (-1 if none): a partition by gain, ties by index."""
    if budget <= 0 or len(gain) == 0:
        return np.zeros(0, np.int64), -1
    if len(gain) <= budget:
        return np.arange(len(gain)), int(np.lexsort((index, -gain))[-1])
    g = np.partition(gain, len(gain) - budget)[len(gain) - budget]  # the budget-th largest gain
    above = np.flatnonzero(gain > g)
    ties = np.flatnonzero(gain == g)
    ties = ties[np.argsort(index[ties], kind="stable")][: budget - len(above)]
    return np.concatenate([above, ties]), int(ties[-1])


def _in_merge_order(gains: np.ndarray, index: np.ndarray) -> bool:
    """Gains never rise, and equal gains come in ascending tie rank."""
    dg = np.diff(gains)
    return bool(np.all((dg < 0) | ((dg == 0) & (np.diff(index) > 0))))


def _heap_merge(classes: dict[int, ClassGreedy], budget: int, chunk_of) -> MergedSequence:
    """The k-way merge with a heap of class heads (any sequences)."""
    heads: list[tuple[float, int, int, int]] = []  # (-gain, tie rank, class, position)
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


def plain_greedy(V: np.ndarray, T: np.ndarray, labels: np.ndarray, a: np.ndarray, budget: int, tau: float,
                 rank: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Reference: recompute every candidate's gain over all classes at every step, pick the max
    (ties: the lower ``rank``, e.g. the key rank; default: the lower example index). O(B n d); for
    tests on small inputs."""
    n = len(a)
    by_rank = np.arange(n) if rank is None else np.argsort(rank, kind="stable")
    sizes = np.bincount(labels)
    hi, lo = np.zeros(n, np.float64), np.zeros(n, np.float64)  # exact redundancy sums
    taken = np.zeros(n, bool)
    picks, gains = [], []
    for _ in range(budget):
        g = np.where(taken, -np.inf, marginal_gain(a, hi + lo, sizes[labels]))
        j = int(by_rank[np.argmax(g[by_rank])])  # the first maximum in rank order
        picks.append(j), gains.append(float(g[j]))
        taken[j] = True
        same = labels == labels[j]
        s = cross_similarity(V[same], T[same], V[j: j + 1], T[j: j + 1], tau)[:, 0]
        hi[same], lo[same] = exact_add(hi[same], lo[same], s)
    return np.array(picks, np.int64), np.array(gains, np.float64)
