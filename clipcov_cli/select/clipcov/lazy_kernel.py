"""The lazy greedy's inner loop for one class, compiled with numba (``nogil``: classes run in threads).

State lives in numpy arrays owned by the caller (``greedy.ClassGreedy``, so a class can be extended
later): a binary max-heap of (gain bound, position) stored as (key = -bound, position) min-heap
arrays, each candidate's redundancy sum as an exact double-double ``(rhi, rlo)`` and the pick count it
was last evaluated at, ``seen``; the selected members (``picks``: their rows are read from the
class' rows when needed; ``QV``, ``QT``: their rows int8 quantized), their running sums (``PV``,
``PT``: float64 vectors, exact) and, per candidate, the exact <v_j, PT> + <t_j, PV> at its last
evaluation (``bh + bl``). The class' rows stay float16 bit patterns (``U``, ``W``, uint16: half the
memory of float32), converted exactly row by row (``load_row``).

Exact arithmetic (see docs/method.md):
- inputs are float16 values; a product of two is a multiple of 2**-48, so a dot product of unit rows
  is exact in float64 whatever the summation order (``_dot_exact``);
- running sums of float16 values are exact in float64 (multiples of 2**-24 below 2**29), and the
  product of a float16 value (11 significant bits) with such a sum (at most 42 significant bits while
  fewer than 2**18 members are selected in the class) is exact too; ``_top_dd`` sums the products
  exactly (as integers, ``_top_int``; with TwoSum beyond that one's range), giving the exact dot
  product as an unevaluated pair (hi, lo);
- redundancy sums are kept exact as (hi, lo) pairs; a gain is ``a_j - fl(hi + lo) / m``, i.e. it
  uses the *correctly rounded* exact sum, which does not depend on the order the terms were added
  in. The plain greedy (``greedy.plain_greedy``) computes the same, so gains agree bit for bit.

The exact stage avoids per-pair float64 work: sum_l [x_l]_tau = sum_l x_l - sum_{x_l <= tau} x_l, the
first sum is the exact O(d) dot product with the running sums minus the one stored at the last
evaluation, and the pairs with
x_l <= tau are singled out by int8 products of a batch of candidates against the new members
(``imatmul.int8_products``, outside this module: ``lazy_extend`` returns to its caller for them) with
a rigorous error bound (``screening_cut``): only pairs whose integer product is at or below the cut
are recomputed exactly (none at all when no cross similarity is near or below tau).

The helpers live by role in ``kernel_state`` (sizes, names of the state vectors' entries),
``kernel_rows`` (float16 rows, prefetch), ``kernel_exact`` (exact sums and bounds) and ``kernel_heap``;
they are re-exported here.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from clipcov_cli.select.clipcov.kernel_exact import (  # noqa: F401  (re-exported)
    _add_pairs_exact, _dot_exact, _exact_key, _linear_bound_key, _minus_if_low, _quantize_row, _subtract_low,
    _top_dd, _top_dot, _top_int, _top_two_sum, _two_sum)
from clipcov_cli.select.clipcov.kernel_heap import _pop, _push, _sift_down, _sift_up, heapify  # noqa: F401
from clipcov_cli.select.clipcov.kernel_rows import (  # noqa: F401  (re-exported)
    _load_row_hw, _load_row_int, _prefetch_rows_hint, _prefetch_rows_none, chosen_load_row, chosen_prefetch,
    column_sums_and_stats, hardware_conversion_supported, load_row, prefetch_rows, scratch_row, square_norm)
from clipcov_cli.select.clipcov.kernel_state import (  # noqa: F401  (re-exported)
    BATCH, BATCH_CAP, CTL, CTL_CUT, CTL_LOOKAHEAD, CTL_PENDING, CTL_PICKS, CTL_SEGMENTS, CTL_SIZE, INT32_MAX,
    LOOKAHEAD_MIN, MAX_SEGMENTS, NORM_GAMMA, NORM_PT, NORM_PV, NORM_T, NORM_V, NORMS, OLD_ROWS, POOL, QMAX, SMALL,
    ST_AHEAD, ST_BATCHED, ST_BATCHES, ST_BOUNDS, ST_PAIRS, ST_REDONE, ST_SINGLE, STAT_NAMES, STATS, quantization,
    screening_cut, screening_error, stat)


@njit(cache=True, nogil=True)
def _finish_batch(U, W, a, tau, m, npicks, hk, hi, size, seen, bh, bl, rhi, rlo, PV, PT, norms, picks, stats, bidx,
                  nb, cuts, nseg, seg_off, xbuf, ybuf, cut, rv, rt, rvb, rtb, mv, mt, mvb, mtb):
    """Exact evaluation of a batch whose integer products the caller has computed: for each candidate,
    the exact linear sum over its new members minus the pairs at or below tau (only in segments the
    caller flagged, ``seg_off >= 0``: the others have every product above the cut)."""
    for b in range(nb):
        c = bidx[b]
        if b + 1 < nb:
            prefetch_rows(U, W, bidx[b + 1])
        lo_c = seen[c]
        load_row(U, c, rv, rvb)
        load_row(W, c, rt, rtb)
        h1, l1 = _top_dd(rv, rt, PV, PT, norms)  # exact; minus the stored value: the new members' raw sum
        h, e = _two_sum(rhi[c], h1)
        r = rlo[c] + l1 + e
        h, e = _two_sum(h, -bh[c])
        r += e - bl[c]
        for i in range(nseg):
            if cuts[i + 1] <= lo_c or seg_off[i] < 0:
                continue
            h, r, redo = _subtract_low(rv, rt, b, xbuf, ybuf, seg_off[i], cuts[i + 1] - cuts[i], cuts[i],
                                       max(cuts[i], lo_c), cuts[i + 1], U, W, picks, tau, cut, h, r, mv, mt, mvb, mtb)
            stats[ST_REDONE] += redo
        rhi[c] = h
        rlo[c] = r
        seen[c] = npicks
        bh[c] = h1
        bl[c] = l1
        size = _push(hk, hi, size, _exact_key(a, rhi, rlo, c, m), c)
    return size


@njit(cache=True, nogil=True)
def _pop_for_batch(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms, stats, npicks, m,
                   fresh_k, fresh_i, nfresh, rv, rt, rvb, rtb):
    """Pop the heap's top entry while a batch is being gathered (``lazy_extend``, ``_look_ahead``). A
    fresh entry is set aside in ``fresh_k``/``fresh_i`` (returned position -1; the caller pushes the
    set-aside entries back after the batch). A stale entry whose bound is not from this step gets its
    O(d) bound (``refreshed``). Returns (size, nfresh, position, key, refreshed)."""
    j = hi[0]
    key = hk[0]
    size = _pop(hk, hi, size)
    if size > 0:
        prefetch_rows(U, W, hi[0])  # likely the next entry popped
    if seen[j] == npicks:
        fresh_k[nfresh] = key
        fresh_i[nfresh] = j
        return size, nfresh + 1, -1, key, False
    if lin_ok and bnd[j] != npicks:
        stats[ST_BOUNDS] += 1
        load_row(U, j, rv, rvb)
        load_row(W, j, rt, rtb)
        key = _linear_bound_key(rv, rt, a, PV, PT, norms, bh, bl, rhi, rlo, j, seen[j], npicks, m)
        bnd[j] = npicks
        return size, nfresh, j, key, True
    return size, nfresh, j, key, False


@njit(cache=True, nogil=True)
def _look_ahead(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms, stats, npicks, m, bidx, nb,
                lo_min, fresh_k, fresh_i, nfresh, rv, rt, rvb, rtb, pool_k, pool_i):
    """Top the batch up with more candidates that need the oldest members. Per batch only a few
    (~ the picks until the next batch) were never evaluated or long ago; their products against all
    the members are a skinny matrix product that runs at half the int8 rate. The next POOL stale
    entries of the heap get a current O(d) bound; the best of them join the batch, the rest go back.
    Fresh entries passed on the way are set aside like the batch loop's, so the pool also stops when
    the set-aside buffer is full (many candidates evaluated in one step: near-duplicate rows).
    Which candidates are evaluated exactly, and when, never changes a result (exact sums and keys);
    a candidate evaluated early needs only the members selected after that when it is next due."""
    half = lo_min + (npicks - lo_min) // 2
    old = 0
    for b in range(nb):
        if seen[bidx[b]] < half:
            old += 1
    want = min(OLD_ROWS - old, BATCH_CAP - nb)
    if want <= 0:
        return size, nb, nfresh
    npool = 0
    while npool < POOL and size > 0 and nfresh < fresh_k.shape[0]:  # fresh entries passed are set aside too
        size, nfresh, j2, k2, _ = _pop_for_batch(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT,
                                                 norms, stats, npicks, m, fresh_k, fresh_i, nfresh, rv, rt, rvb, rtb)
        if j2 < 0:
            continue
        pool_k[npool] = k2
        pool_i[npool] = j2
        npool += 1
    order = np.argsort(pool_k[:npool], kind="mergesort")
    for r in range(npool):
        p = order[r]
        if r < want:
            bidx[nb] = pool_i[p]
            nb += 1
            stats[ST_AHEAD] += 1
        else:
            size = _push(hk, hi, size, pool_k[p], pool_i[p])
    return size, nb, nfresh


@njit(cache=True, nogil=True)
def _take_fresh(U, W, j, key, npicks, PV, PT, norms, QV, QT, inv_s, picks, gains, rv, rt, rvb, rtb):
    """Select candidate j (fresh: ``key`` is minus its exact current gain) as pick ``npicks``: add its rows
    to the running sums (and their norms), store its quantized rows."""
    d = U.shape[1]
    load_row(U, j, rv, rvb)
    load_row(W, j, rt, rtb)
    nv2 = 0.0
    nt2 = 0.0
    for q in range(d):
        PV[q] += rv[q]
        PT[q] += rt[q]
        nv2 += PV[q] * PV[q]
        nt2 += PT[q] * PT[q]
    norms[NORM_PV] = math.sqrt(nv2) * (1 + 1e-9)
    norms[NORM_PT] = math.sqrt(nt2) * (1 + 1e-9)
    _quantize_row(rv, inv_s[0], QV[npicks])
    _quantize_row(rt, inv_s[1], QT[npicks])
    picks[npicks] = j
    gains[npicks] = -key


@njit(cache=True, nogil=True)
def _gather_batch(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms, stats, npicks, m, j, lo,
                  bidx, lookahead_min, rv, rt, rvb, rtb):
    """Gather a batch after j (popped, last evaluated at ``lo``) into ``bidx``: the next stale entries
    whose bound is current (the likely next picks); a stale entry with an old bound gets its O(d) bound
    first and goes back; fresh entries passed are set aside and pushed back. Topped up by
    ``_look_ahead`` when the oldest members needed are at least ``lookahead_min``. Returns
    (size, batch size, the oldest last evaluation in the batch)."""
    fresh_k = np.empty(4 * BATCH + POOL, np.float64)
    fresh_i = np.empty(4 * BATCH + POOL, np.int64)
    nb = 1
    bidx[0] = j
    lo_min = lo
    pops = 0
    nfresh = 0
    while nb < BATCH and size > 0 and pops < 4 * BATCH:
        size, nfresh, j2, k2, refreshed = _pop_for_batch(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi,
                                                         rlo, PV, PT, norms, stats, npicks, m, fresh_k, fresh_i,
                                                         nfresh, rv, rt, rvb, rtb)
        pops += 1
        if j2 < 0:  # fresh: set aside, back in the heap after the batch
            continue
        if refreshed:  # back with its new bound: it joins a batch only if it reaches the top again
            size = _push(hk, hi, size, k2, j2)
            continue
        bidx[nb] = j2
        nb += 1
        if seen[j2] < lo_min:
            lo_min = seen[j2]
    if npicks - lo_min >= lookahead_min:
        pool_k = np.empty(POOL, np.float64)
        pool_i = np.empty(POOL, np.int64)
        size, nb, nfresh = _look_ahead(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms,
                                       stats, npicks, m, bidx, nb, lo_min, fresh_k, fresh_i, nfresh, rv, rt, rvb,
                                       rtb, pool_k, pool_i)
        for b in range(nb):
            lo_min = min(lo_min, seen[bidx[b]])
    for f in range(nfresh):
        size = _push(hk, hi, size, fresh_k[f], fresh_i[f])
    return size, nb, lo_min


@njit(cache=True, nogil=True)
def _stage_batch(U, W, npicks, seen, bidx, nb, lo_min, cuts, seg_rows, Qbv, Qbt, inv_s, stats, rv, rt, rvb, rtb):
    """Sort a gathered batch by last evaluation, cut the members it needs in column blocks (``cuts``,
    ``seg_rows``: a staircase) and quantize its rows into ``Qbv``, ``Qbt`` (counted in ``stats``).
    Returns the block count."""
    # sort the batch by last evaluation, so that the members each one still needs form a staircase
    for b in range(1, nb):
        x = bidx[b]
        p = b - 1
        while p >= 0 and seen[bidx[p]] > seen[x]:
            bidx[p + 1] = bidx[p]
            p -= 1
        bidx[p + 1] = x
    L = npicks - lo_min
    gap = max(64, L // MAX_SEGMENTS)
    nseg = 0
    cuts[0] = lo_min
    for b in range(1, nb):
        sb = seen[bidx[b]]
        if sb - cuts[nseg] >= gap:
            nseg += 1
            cuts[nseg] = sb
    nseg += 1
    cuts[nseg] = npicks
    for i in range(nseg):
        rows = 0
        while rows < nb and seen[bidx[rows]] < cuts[i + 1]:
            rows += 1
        seg_rows[i] = rows
        stats[ST_PAIRS] += rows * (cuts[i + 1] - cuts[i])
    for b in range(nb):
        if b + 1 < nb:
            prefetch_rows(U, W, bidx[b + 1])
        load_row(U, bidx[b], rv, rvb)
        load_row(W, bidx[b], rt, rtb)
        _quantize_row(rv, inv_s[0], Qbv[b])
        _quantize_row(rt, inv_s[1], Qbt[b])
    stats[ST_BATCHES] += 1
    stats[ST_BATCHED] += nb
    return nseg


@njit(cache=True, nogil=True)
def lazy_extend(U, W, a, tau, target, hk, hi, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms, QV, QT, inv_s,
                picks, gains, stats, ctl, bidx, cuts, seg_rows, seg_off, xbuf, ybuf, Qbv, Qbt):
    """Run the lazy greedy until ``ctl[CTL_PICKS]`` (picks) reaches ``target`` or the heap is empty (returns
    0), or until a batch needs its int8 products (returns 1; call again once they are computed).

    ``ctl`` (int64[CTL]): heap size, picks, pending batch size, pending segments, screening cut, and
    the oldest-members count from which a batch is topped up (``_look_ahead``).
    A stale entry that reaches the top is re-evaluated in two stages:
    1. (tau <= 0 only) an upper bound in O(d): thresholding only raises values when tau <= 0
       ([x]_tau >= x), so the new members add at least <v_j, dT> + <t_j, dV> (dT, dV: the sums of
       their rows, through the running sums and the stored value); the bound carries a margin far
       above float rounding. The entry goes back with this bound (``bnd`` records when).
    2. if it reaches the top again with a bound from the current step: exact. With few new members,
       pair by pair; otherwise together with the stale entries next in the heap (up to BATCH), whose
       exact evaluation now is work they would need anyway before being selected. The batch, sorted by
       last evaluation, is cut in column blocks (a staircase: block [cuts[i], cuts[i+1]) is needed by
       the first seg_rows[i] candidates only); its quantized rows are in Qbv, Qbt. The caller
       computes the products of each block and stores those of blocks holding a product at or below
       the cut in xbuf, ybuf at seg_off[i] (else seg_off[i] = -1); the next call finishes the batch.
    A fresh entry (evaluated at the current step) at the top is selected.

    ``stats`` (int64[STATS]) counts: bounds, single exact evaluations, batches, batched candidates,
    member pairs evaluated (blocks included), pairs recomputed exactly for thresholding, batched
    candidates added by the look-ahead.
    """
    m = U.shape[0]
    d = U.shape[1]
    size = ctl[CTL_SIZE]
    npicks = ctl[CTL_PICKS]
    cut = ctl[CTL_CUT]
    lin_ok = tau <= 0.0  # [x]_tau >= x only when tau <= 0 (then thresholding only raises values)
    rv, rvb = scratch_row(d)  # the row at hand, as float32 values
    rt, rtb = scratch_row(d)
    mv, mvb = scratch_row(d)  # a member's rows
    mt, mtb = scratch_row(d)
    if ctl[CTL_PENDING] > 0:
        size = _finish_batch(U, W, a, tau, m, npicks, hk, hi, size, seen, bh, bl, rhi, rlo, PV, PT, norms, picks, stats,
                             bidx, ctl[CTL_PENDING], cuts, ctl[CTL_SEGMENTS], seg_off, xbuf, ybuf, cut, rv, rt, rvb, rtb, mv, mt, mvb, mtb)
        ctl[CTL_PENDING] = 0
    while npicks < target and size > 0:
        key = hk[0]
        j = hi[0]
        size = _pop(hk, hi, size)
        if size > 0:
            prefetch_rows(U, W, hi[0])  # likely the next entry handled
        lo = seen[j]
        if lo == npicks:  # fresh: the key is the exact current gain
            _take_fresh(U, W, j, key, npicks, PV, PT, norms, QV, QT, inv_s, picks, gains, rv, rt, rvb, rtb)
            npicks += 1
            continue
        if lin_ok and bnd[j] != npicks:
            # stage 1: an upper bound of the gain in O(d), no per-member work
            bnd[j] = npicks
            stats[ST_BOUNDS] += 1
            load_row(U, j, rv, rvb)
            load_row(W, j, rt, rtb)
            bound = _linear_bound_key(rv, rt, a, PV, PT, norms, bh, bl, rhi, rlo, j, lo, npicks, m)
            size = _push(hk, hi, size, bound, j)
            continue
        # stage 2: exact
        if npicks - lo <= SMALL:
            stats[ST_SINGLE] += 1
            stats[ST_PAIRS] += npicks - lo
            load_row(U, j, rv, rvb)
            load_row(W, j, rt, rtb)
            _add_pairs_exact(rv, rt, j, U, W, picks, lo, npicks, tau, rhi, rlo, bh, bl, mv, mt, mvb, mtb)
            seen[j] = npicks
            size = _push(hk, hi, size, _exact_key(a, rhi, rlo, j, m), j)
            continue
        # the batch (``_gather_batch``), its column blocks and quantized rows (``_stage_batch``)
        size, nb, lo_min = _gather_batch(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms,
                                         stats, npicks, m, j, lo, bidx, ctl[CTL_LOOKAHEAD], rv, rt, rvb, rtb)
        nseg = _stage_batch(U, W, npicks, seen, bidx, nb, lo_min, cuts, seg_rows, Qbv, Qbt, inv_s, stats, rv, rt, rvb, rtb)
        ctl[CTL_SIZE] = size
        ctl[CTL_PICKS] = npicks
        ctl[CTL_PENDING] = nb
        ctl[CTL_SEGMENTS] = nseg
        return 1
    ctl[CTL_SIZE] = size
    ctl[CTL_PICKS] = npicks
    return 0
