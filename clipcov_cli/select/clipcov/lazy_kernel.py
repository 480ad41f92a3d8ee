"""The lazy greedy's inner loop for one class, compiled with numba (``nogil``: classes run in threads).

State lives in numpy arrays owned by the caller (``greedy.ClassGreedy``, so a class can be extended
later), grouped in the records of ``kernel_state`` (``ClassRows``, ``Candidates``, ``Members``,
``Control``, ``Batch``): a binary max-heap of (gain bound, position) stored as (key = -bound, position) min-heap
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

A stale entry that reaches the top of the heap is re-evaluated in two stages:
1. (tau <= 0 only) an upper bound in O(d): thresholding only raises values when tau <= 0
   ([x]_tau >= x), so the new members add at least <v_j, dT> + <t_j, dV> (dT, dV: the sums of their
   rows, through the running sums and the stored value); the bound carries a margin far above float
   rounding. The entry goes back with this bound (``bnd`` records when).
2. if it reaches the top again with a bound from the current step: exact. With few new members
   (``SMALL``), pair by pair; otherwise together with the stale entries next in the heap (up to
   BATCH), whose exact evaluation now is work they would need anyway before being selected. The batch,
   sorted by last evaluation, is cut in column blocks (a staircase: block [cuts[i], cuts[i+1]) is
   needed by the first seg_rows[i] candidates only); its quantized rows are in Qbv, Qbt. The caller
   computes the products of each block and stores those of blocks holding a product at or below the
   cut in xbuf, ybuf at seg_off[i] (else seg_off[i] = -1); the next call finishes the batch.
A fresh entry (evaluated at the current step) at the top is selected.

The counters (``Control.stats``, ``kernel_state.STAT_NAMES``): bounds, single exact evaluations,
batches, batched candidates, member pairs evaluated (blocks included), pairs recomputed exactly for
thresholding, batched candidates added by the look-ahead.

The helpers live by role in ``kernel_state`` (sizes, the records, names of the state vectors'
entries), ``kernel_rows`` (float16 rows, prefetch), ``kernel_exact`` (exact sums and bounds) and
``kernel_heap``; callers import them from there.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from clipcov_cli.select.clipcov.kernel_exact import (
    _add_pairs_exact, _exact_key, _linear_bound_key, _quantize_row, _subtract_low, _top_dd, _two_sum)
from clipcov_cli.select.clipcov.kernel_heap import _pop, _push
from clipcov_cli.select.clipcov.kernel_rows import load_row, prefetch_rows, scratch_row
from clipcov_cli.select.clipcov.kernel_state import (
    BATCH, BATCH_CAP, CTL_CUT, CTL_LOOKAHEAD, CTL_PENDING, CTL_PICKS, CTL_SEGMENTS, CTL_SIZE, MAX_SEGMENTS, NORM_PT,
    NORM_PV, OLD_ROWS, POOL, SMALL, ST_AHEAD, ST_BATCHED, ST_BATCHES, ST_BOUNDS, ST_PAIRS, ST_REDONE, ST_SINGLE,
    Entries, Scratch)

__all__ = ["lazy_extend"]


@njit(cache=True, nogil=True)
def _scratch(d):
    """Row buffers for one call of ``lazy_extend``."""
    rv, rvb = scratch_row(d)  # the row at hand, as float32 values
    rt, rtb = scratch_row(d)
    mv, mvb = scratch_row(d)  # a member's rows
    mt, mtb = scratch_row(d)
    return Scratch(rv, rvb, rt, rtb, mv, mvb, mt, mtb)


@njit(cache=True, nogil=True)
def _finish_batch(rows, cand, mem, batch, control, scr):
    """Exact evaluation of the pending batch, whose integer products the caller has computed: for each
    candidate, the exact linear sum over its new members minus the pairs at or below tau (only in
    blocks the caller flagged, ``seg_off >= 0``: the others have every product above the cut).
    Returns the heap's size."""
    ctl = control.ctl
    m = rows.U.shape[0]
    npicks = ctl[CTL_PICKS]
    size = ctl[CTL_SIZE]
    nb = ctl[CTL_PENDING]
    cut = ctl[CTL_CUT]
    bidx, cuts, seg_off = batch.bidx, batch.cuts, batch.seg_off
    seen, rhi, rlo, bh, bl = cand.seen, cand.rhi, cand.rlo, cand.bh, cand.bl
    U, W, rv, rt, rvb, rtb = rows.U, rows.W, scr.rv, scr.rt, scr.rvb, scr.rtb  # fields read once, not per row
    PV, PT, norms, stats = mem.PV, mem.PT, mem.norms, control.stats
    for b in range(nb):
        c = bidx[b]
        if b + 1 < nb:
            prefetch_rows(U, W, bidx[b + 1])
        lo_c = seen[c]
        load_row(U, c, rv, rvb)
        load_row(W, c, rt, rtb)
        # exact; minus the stored value: the new members' raw sum
        h1, l1 = _top_dd(rv, rt, PV, PT, norms)
        h, e = _two_sum(rhi[c], h1)
        r = rlo[c] + l1 + e
        h, e = _two_sum(h, -bh[c])
        r += e - bl[c]
        for i in range(ctl[CTL_SEGMENTS]):
            if cuts[i + 1] <= lo_c or seg_off[i] < 0:
                continue
            h, r, redo = _subtract_low(rows, mem, batch, scr, b, i, max(cuts[i], lo_c), cut, h, r)
            stats[ST_REDONE] += redo
        rhi[c] = h
        rlo[c] = r
        seen[c] = npicks
        bh[c] = h1
        bl[c] = l1
        size = _push(cand.hk, cand.hi, size, _exact_key(rows.a, rhi, rlo, c, m), c)
    return size


@njit(cache=True, nogil=True)
def _pop_for_batch(rows, cand, mem, stats, scr, size, npicks, aside, naside):
    """Pop the heap's top entry while a batch is being gathered (``_gather_batch``, ``_look_ahead``). A
    fresh entry is set aside in ``aside`` (returned position -1; the caller pushes the set-aside
    entries back after the batch). A stale entry whose bound is not from this step gets its O(d)
    bound (``refreshed``). Returns (size, naside, position, key, refreshed)."""
    hk, hi = cand.hk, cand.hi
    j = hi[0]
    key = hk[0]
    size = _pop(hk, hi, size)
    if size > 0:
        prefetch_rows(rows.U, rows.W, hi[0])  # likely the next entry popped
    if cand.seen[j] == npicks:
        aside.k[naside] = key
        aside.i[naside] = j
        return size, naside + 1, -1, key, False
    if rows.tau <= 0.0 and cand.bnd[j] != npicks:
        stats[ST_BOUNDS] += 1
        load_row(rows.U, j, scr.rv, scr.rvb)
        load_row(rows.W, j, scr.rt, scr.rtb)
        key = _linear_bound_key(rows, cand, mem, scr, j, npicks)
        cand.bnd[j] = npicks
        return size, naside, j, key, True
    return size, naside, j, key, False


@njit(cache=True, nogil=True)
def _look_ahead(rows, cand, mem, batch, stats, scr, size, npicks, nb, lo_min, aside, naside):
    """Top the batch up with more candidates that need the oldest members. Per batch only a few
    (~ the picks until the next batch) were never evaluated or long ago; their products against all
    the members are a skinny matrix product that runs at half the int8 rate. The next POOL stale
    entries of the heap get a current O(d) bound; the best of them join the batch, the rest go back.
    Fresh entries passed on the way are set aside like the batch loop's, so the pool also stops when
    the set-aside buffer is full (many candidates evaluated in one step: near-duplicate rows).
    Which candidates are evaluated exactly, and when, never changes a result (exact sums and keys);
    a candidate evaluated early needs only the members selected after that when it is next due.
    Returns (size, nb, naside)."""
    bidx = batch.bidx
    seen, hk, hi = cand.seen, cand.hk, cand.hi  # fields read once, not per entry
    half = lo_min + (npicks - lo_min) // 2
    old = 0
    for b in range(nb):
        if seen[bidx[b]] < half:
            old += 1
    want = min(OLD_ROWS - old, BATCH_CAP - nb)
    if want <= 0:
        return size, nb, naside
    pool_k, pool_i = np.empty(POOL, np.float64), np.empty(POOL, np.int64)
    npool = 0
    cap = aside.k.shape[0]
    while npool < POOL and size > 0 and naside < cap:  # fresh entries passed are set aside too
        size, naside, j2, k2, _ = _pop_for_batch(rows, cand, mem, stats, scr, size, npicks, aside, naside)
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
    return size, nb, naside


@njit(cache=True, nogil=True)
def _take_fresh(rows, mem, scr, j, key, npicks):
    """Select candidate j (fresh: ``key`` is minus its exact current gain) as pick ``npicks``: add its rows
    to the running sums (and their norms), store its quantized rows."""
    d = rows.U.shape[1]
    load_row(rows.U, j, scr.rv, scr.rvb)
    load_row(rows.W, j, scr.rt, scr.rtb)
    rv, rt, PV, PT = scr.rv, scr.rt, mem.PV, mem.PT
    nv2 = 0.0
    nt2 = 0.0
    for q in range(d):
        PV[q] += rv[q]
        PT[q] += rt[q]
        nv2 += PV[q] * PV[q]
        nt2 += PT[q] * PT[q]
    mem.norms[NORM_PV] = math.sqrt(nv2) * (1 + 1e-9)
    mem.norms[NORM_PT] = math.sqrt(nt2) * (1 + 1e-9)
    _quantize_row(rv, mem.inv_s[0], mem.QV[npicks])
    _quantize_row(rt, mem.inv_s[1], mem.QT[npicks])
    mem.picks[npicks] = j
    mem.gains[npicks] = -key


@njit(cache=True, nogil=True)
def _gather_batch(rows, cand, mem, batch, control, scr, size, npicks, j, lo):
    """Gather a batch after j (popped, last evaluated at ``lo``) into ``batch.bidx``: the next stale
    entries whose bound is current (the likely next picks); a stale entry with an old bound gets its
    O(d) bound first and goes back; fresh entries passed are set aside and pushed back. Topped up by
    ``_look_ahead`` when the oldest members needed are at least ``ctl[CTL_LOOKAHEAD]``. Returns
    (size, batch size, the oldest last evaluation in the batch)."""
    stats = control.stats
    seen, hk, hi, bidx = cand.seen, cand.hk, cand.hi, batch.bidx  # fields read once, not per entry
    aside = Entries(np.empty(4 * BATCH + POOL, np.float64), np.empty(4 * BATCH + POOL, np.int64))
    nb = 1
    bidx[0] = j
    lo_min = lo
    pops = 0
    naside = 0
    while nb < BATCH and size > 0 and pops < 4 * BATCH:
        size, naside, j2, k2, refreshed = _pop_for_batch(rows, cand, mem, stats, scr, size, npicks, aside, naside)
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
    if npicks - lo_min >= control.ctl[CTL_LOOKAHEAD]:
        size, nb, naside = _look_ahead(rows, cand, mem, batch, stats, scr, size, npicks, nb, lo_min, aside, naside)
        for b in range(nb):
            lo_min = min(lo_min, seen[bidx[b]])
    aside_k, aside_i = aside.k, aside.i
    for f in range(naside):
        size = _push(hk, hi, size, aside_k[f], aside_i[f])
    return size, nb, lo_min


@njit(cache=True, nogil=True)
def _stage_batch(rows, cand, mem, batch, stats, scr, npicks, nb, lo_min):
    """Sort a gathered batch by last evaluation, cut the members it needs in column blocks (``cuts``,
    ``seg_rows``: a staircase) and quantize its rows into ``Qbv``, ``Qbt`` (counted in ``stats``).
    Returns the block count."""
    seen, bidx, cuts, seg_rows = cand.seen, batch.bidx, batch.cuts, batch.seg_rows  # fields read once
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
        n_rows = 0
        while n_rows < nb and seen[bidx[n_rows]] < cuts[i + 1]:
            n_rows += 1
        seg_rows[i] = n_rows
        stats[ST_PAIRS] += n_rows * (cuts[i + 1] - cuts[i])
    U, W, rv, rt, rvb, rtb = rows.U, rows.W, scr.rv, scr.rt, scr.rvb, scr.rtb
    inv_v, inv_t, Qbv, Qbt = mem.inv_s[0], mem.inv_s[1], batch.Qbv, batch.Qbt
    for b in range(nb):
        if b + 1 < nb:
            prefetch_rows(U, W, bidx[b + 1])
        load_row(U, bidx[b], rv, rvb)
        load_row(W, bidx[b], rt, rtb)
        _quantize_row(rv, inv_v, Qbv[b])
        _quantize_row(rt, inv_t, Qbt[b])
    stats[ST_BATCHES] += 1
    stats[ST_BATCHED] += nb
    return nseg


@njit(cache=True, nogil=True)
def lazy_extend(rows, cand, mem, batch, control, target):
    """Run the lazy greedy until ``ctl[CTL_PICKS]`` (picks) reaches ``target`` or the heap is empty (returns
    0), or until a batch needs its int8 products (returns 1; call again once the caller has stored
    them in ``batch``). The arguments are ``kernel_state``'s records: ``ClassRows``, ``Candidates``,
    ``Members``, ``Batch``, ``Control`` (``ctl``: heap size, picks, pending batch size, pending
    segments, screening cut, and the oldest-members count from which a batch is topped up)."""
    ctl, stats = control.ctl, control.stats
    hk, hi, seen, bnd = cand.hk, cand.hi, cand.seen, cand.bnd  # fields read once, not per entry
    U, W, tau = rows.U, rows.W, rows.tau
    scr = _scratch(U.shape[1])
    rv, rt, rvb, rtb = scr.rv, scr.rt, scr.rvb, scr.rtb
    if ctl[CTL_PENDING] > 0:
        ctl[CTL_SIZE] = _finish_batch(rows, cand, mem, batch, control, scr)
        ctl[CTL_PENDING] = 0
    size = ctl[CTL_SIZE]
    npicks = ctl[CTL_PICKS]
    while npicks < target and size > 0:
        key = hk[0]
        j = hi[0]
        size = _pop(hk, hi, size)
        if size > 0:
            prefetch_rows(U, W, hi[0])  # likely the next entry handled
        lo = seen[j]
        if lo == npicks:  # fresh: the key is the exact current gain
            _take_fresh(rows, mem, scr, j, key, npicks)
            npicks += 1
            continue
        if tau <= 0.0 and bnd[j] != npicks:  # [x]_tau >= x only when tau <= 0
            # stage 1: an upper bound of the gain in O(d), no per-member work
            bnd[j] = npicks
            stats[ST_BOUNDS] += 1
            load_row(U, j, rv, rvb)
            load_row(W, j, rt, rtb)
            size = _push(hk, hi, size, _linear_bound_key(rows, cand, mem, scr, j, npicks), j)
            continue
        # stage 2: exact
        if npicks - lo <= SMALL:  # few new members: pair by pair
            stats[ST_SINGLE] += 1
            stats[ST_PAIRS] += npicks - lo
            load_row(U, j, rv, rvb)
            load_row(W, j, rt, rtb)
            _add_pairs_exact(rows, cand, mem, scr, j, lo, npicks)
            seen[j] = npicks
            size = _push(hk, hi, size, _exact_key(rows.a, cand.rhi, cand.rlo, j, U.shape[0]), j)
            continue
        # the batch (``_gather_batch``), its column blocks and quantized rows (``_stage_batch``)
        size, nb, lo_min = _gather_batch(rows, cand, mem, batch, control, scr, size, npicks, j, lo)
        ctl[CTL_SEGMENTS] = _stage_batch(rows, cand, mem, batch, stats, scr, npicks, nb, lo_min)
        ctl[CTL_SIZE] = size
        ctl[CTL_PICKS] = npicks
        ctl[CTL_PENDING] = nb
        return 1
    ctl[CTL_SIZE] = size
    ctl[CTL_PICKS] = npicks
    return 0
