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

from clipcov_cli.select.clipcov.imatmul import ThreadShare, int8_products
from clipcov_cli.select.clipcov.kernel_heap import heapify
from clipcov_cli.select.clipcov.kernel_rows import column_sums_and_stats
from clipcov_cli.select.clipcov.kernel_state import (
    BATCH_CAP, CTL, CTL_CUT, CTL_LOOKAHEAD, CTL_PICKS, CTL_SEGMENTS, CTL_SIZE, LOOKAHEAD_MIN, MAX_SEGMENTS, NORM_GAMMA,
    NORM_T, NORM_V, NORMS, STATS, Batch, Candidates, ClassRows, Control, Members, quantization, screening_cut,
    screening_error)
from clipcov_cli.select.clipcov.lazy_kernel import lazy_extend
from clipcov_cli.select.clipcov.rows import F16_TO_F32, as_f16_bits, to_float32
from clipcov_cli.select.clipcov.terms import cross_similarity, exact_add, marginal_gain


class ClassGreedy:
    """The greedy sequence of one class, computed lazily and extendable.

    ``V``, ``T``: the class' rows, float16 bit patterns (uint16) or float16 values in any float dtype;
    ``a``: modular scores, ``index``: the rows' global tie ranks (ascending: key ranks), for the merge;
    ``row_stats``: the rows' screening statistics (``kernel_rows.column_sums_and_stats``) if the caller
    has them; ``threads``: the torch threads to use for the int8 products (applied before each batch);
    ``lookahead_min``: the kernel's look-ahead threshold (a tuning constant; tests lower it).
    """

    def __init__(self, V: np.ndarray, T: np.ndarray, a: np.ndarray, index: np.ndarray, tau: float,
                 row_stats: tuple | None = None, threads: ThreadShare | None = None,
                 lookahead_min: int = LOOKAHEAD_MIN) -> None:
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
        self.stats = np.zeros(STATS, np.int64)  # the kernel's counters (kernel_state.STAT_NAMES)
        if self.lazy:
            self._init_lazy(row_stats or column_sums_and_stats(self.U, self.W)[2])
        else:
            self.taken = np.zeros(self.m, bool)

    def _init_lazy(self, row_stats: tuple) -> None:
        """The kernel's state records (``kernel_state``), built here once: the kernel writes into their
        arrays; the buffers that grow (``Members.QV``/``QT``, ``Batch.xbuf``/``ybuf``) are replaced here."""
        d, m = self.U.shape[1], self.m
        # keys -a_j with positions: ties break by position (the rows come in key order: by key)
        hk, hi = -self.a.copy(), np.arange(m, dtype=np.int64)
        heapify(hk, hi)
        max_v, max_t, norm_v, norm_t = row_stats
        gamma = 2.0 * (2 * d) * 2.0 ** -53 / (1 - (2 * d) * 2.0 ** -53)
        norms = np.zeros(NORMS)  # max |v|, max |t|, gamma, |PV|, |PT| (the last two: running)
        norms[[NORM_V, NORM_T, NORM_GAMMA]] = norm_v, norm_t, gamma
        inv = np.array([quantization(max_v), quantization(max_t)])
        err = screening_error(d, inv[0], inv[1], norm_v, norm_t)
        ctl = np.zeros(CTL, np.int64)
        ctl[CTL_SIZE] = m
        ctl[CTL_CUT] = screening_cut(self.tau, err, inv[0], inv[1])
        ctl[CTL_LOOKAHEAD] = self.lookahead_min
        self._rows = ClassRows(self.U, self.W, self.a, self.tau)
        # bh, bl: exact <v_j, PT> + <t_j, PV> at j's last evaluation (see kernel_exact._linear_bound_key)
        self._cand = Candidates(hk, hi, seen=np.zeros(m, np.int64), bnd=np.full(m, -1, np.int64),
                                bh=np.zeros(m), bl=np.zeros(m), rhi=self.red_hi, rlo=self.red_lo)
        self._mem = Members(self._picks, self._gains, PV=np.zeros(d), PT=np.zeros(d), norms=norms,
                            QV=np.zeros((0, d), np.int8), QT=np.zeros((0, d), np.int8), inv_s=inv)
        self._control = Control(ctl, self.stats)
        seg = MAX_SEGMENTS + 2
        self._batch = Batch(np.empty(BATCH_CAP, np.int64), cuts=np.empty(seg, np.int64),
                            seg_rows=np.empty(seg, np.int64), seg_off=np.full(seg, -1, np.int64),
                            xbuf=np.zeros(0, np.int32), ybuf=np.zeros(0, np.int32),  # grown on demand
                            Qbv=np.empty((BATCH_CAP, d), np.int8), Qbt=np.empty((BATCH_CAP, d), np.int8))

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
        mem = self._mem
        if mem.QV.shape[0] < target:
            cap = min(self.m, max(target, 2 * mem.QV.shape[0]))
            self._mem = mem._replace(QV=_grow(mem.QV, cap), QT=_grow(mem.QT, cap))
        while lazy_extend(self._rows, self._cand, self._mem, self._batch, self._control, target):
            if self.threads is not None:
                self.threads.apply()
            try:
                self._screen_batch()
            except BaseException:
                self._broken = True
                raise
        self._n = int(self._control.ctl[CTL_PICKS])

    def _screen_batch(self) -> None:
        """The int8 products of the pending batch, block by block; a block whose products are all above
        the cut is certified (no pair at or below tau), the others are handed to the kernel."""
        ctl, batch, QV, QT = self._control.ctl, self._batch, self._mem.QV, self._mem.QT
        cut = ctl[CTL_CUT]
        used = 0
        for i in range(int(ctl[CTL_SEGMENTS])):
            rows, c0, c1 = int(batch.seg_rows[i]), int(batch.cuts[i]), int(batch.cuts[i + 1])
            Qbv, Qbt = batch.Qbv[:rows], batch.Qbt[:rows]
            low = False  # some product at or below the cut?
            for s in range(c0, c1, SCREEN_COLUMNS):  # column blocks that stay in cache
                e = min(c1, s + SCREEN_COLUMNS)
                if (int8_products(Qbv, QT[s:e]).min() <= cut  # ~ <v_c, t_l> / (s_v s_t)
                        or int8_products(Qbt, QV[s:e]).min() <= cut):  # ~ <t_c, v_l> / ...
                    low = True
                    break
            if not low:
                batch.seg_off[i] = -1
                continue
            X = int8_products(Qbv, QT[c0:c1])
            Y = int8_products(Qbt, QV[c0:c1])
            need = used + X.size
            if batch.xbuf.size < need:
                size = max(need, 2 * batch.xbuf.size)
                batch = self._batch = batch._replace(xbuf=_grow(batch.xbuf, size), ybuf=_grow(batch.ybuf, size))
            batch.xbuf[used: need] = X.ravel()
            batch.ybuf[used: need] = Y.ravel()
            batch.seg_off[i] = used
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
