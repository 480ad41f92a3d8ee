"""The lazy greedy's inner loop for one class, compiled with numba (``nogil``: classes run in threads).

State lives in numpy arrays owned by the caller (so a class can be extended later): a binary
max-heap of (gain bound, position) stored as (key = -bound, position) min-heap arrays, each
candidate's redundancy sum as an exact double-double ``(rhi, rlo)`` and the pick count it was last
evaluated at, ``seen``; the selected members' rows (``SV``, ``ST``, float32) and their prefix sums
(``PV``, ``PT``, float64).

Exact arithmetic (see docs/method.md):
- inputs are float16 values; a product of two is a multiple of 2**-48, so a dot product of unit rows
  is exact in float64 whatever the summation order (``_dot_exact``);
- prefix sums of float16 values are exact in float64, so are their differences, and the product of
  a float16 value with such a difference is exact too; ``_dot_dd`` adds the products with TwoSum,
  giving the exact dot product as an unevaluated pair (hi, lo);
- redundancy sums are kept exact as (hi, lo) pairs; a gain is ``a_j - fl(hi + lo) / m``, i.e. it
  uses the *correctly rounded* exact sum, which does not depend on the order the terms were added
  in. The plain greedy (``greedy.plain_greedy``) computes the same, so gains agree bit for bit.

The exact stage avoids per-pair float64 work: sum_l [x_l]_tau = sum_l x_l - sum_{x_l <= tau} x_l, the
first sum is one exact O(d) dot product with a difference of prefix sums, and the pairs with
x_l <= tau are found with float32 BLAS products (``np.dot``) of a batch of candidates against the new
members, with a rigorous error bound ``eps``: only pairs with fl32(x) <= tau + eps are recomputed
exactly (none at all when no cross similarity is near or below tau).
"""

from __future__ import annotations

import numpy as np
from numba import njit

SMALL = 24  # at most this many new members: evaluate one candidate alone, pair by pair
BATCH = 128  # candidates evaluated together in float32 products
MAX_SEGMENTS = 6  # column blocks of a batch (members sorted by last evaluation: a staircase)


def float32_dot_error_bound(d: int, max_norm: float = 1.01) -> float:
    """|fl32(<u, w>) - <u, w>| <= d * 2**-24 / (1 - d * 2**-24) * sum |u_q w_q| for float32 inputs
    (any summation order, FMA or not); sum |u_q w_q| <= |u| |w|. Doubled for safety."""
    u = 2.0 ** -24
    return 2.0 * d * u / (1.0 - d * u) * max_norm * max_norm


@njit(cache=True, nogil=True)
def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(cache=True, nogil=True, fastmath=True)
def _dot_exact(A, i, B, l):
    """<A_i, B_l> in float64: exact for float16-valued rows in any order (so fastmath may vectorize)."""
    x = 0.0
    for q in range(A.shape[1]):
        x += np.float64(A[i, q]) * np.float64(B[l, q])
    return x


@njit(cache=True, nogil=True)
def _dot_dd(A, i, P, top, bot):
    """The exact <A_i, P[top] - P[bot]> as (hi, lo): each product is exact, TwoSum keeps the rest."""
    hi = 0.0
    lo = 0.0
    for q in range(A.shape[1]):
        p = np.float64(A[i, q]) * (P[top, q] - P[bot, q])
        hi, e = _two_sum(hi, p)
        lo += e
    return hi, lo


@njit(cache=True, inline="always")
def _less(hk, hi, a, b):
    return hk[a] < hk[b] or (hk[a] == hk[b] and hi[a] < hi[b])


@njit(cache=True, nogil=True)
def _sift_down(hk, hi, size, pos):
    while True:
        left = 2 * pos + 1
        if left >= size:
            return
        best = left
        right = left + 1
        if right < size and _less(hk, hi, right, left):
            best = right
        if not _less(hk, hi, best, pos):
            return
        hk[pos], hk[best] = hk[best], hk[pos]
        hi[pos], hi[best] = hi[best], hi[pos]
        pos = best


@njit(cache=True, nogil=True)
def _sift_up(hk, hi, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if not _less(hk, hi, pos, parent):
            return
        hk[pos], hk[parent] = hk[parent], hk[pos]
        hi[pos], hi[parent] = hi[parent], hi[pos]
        pos = parent


@njit(cache=True, nogil=True)
def heapify(hk, hi):
    for pos in range(hk.shape[0] // 2 - 1, -1, -1):
        _sift_down(hk, hi, hk.shape[0], pos)


@njit(cache=True, nogil=True)
def _pop(hk, hi, size):
    size -= 1
    hk[0] = hk[size]
    hi[0] = hi[size]
    _sift_down(hk, hi, size, 0)
    return size


@njit(cache=True, nogil=True)
def _push(hk, hi, size, key, j):
    hk[size] = key
    hi[size] = j
    _sift_up(hk, hi, size)
    return size + 1


@njit(cache=True, nogil=True)
def _exact_key(a, rhi, rlo, j, m):
    return -(a[j] - (rhi[j] + rlo[j]) / m)


@njit(cache=True, nogil=True, fastmath=True)
def _linear_sum(V, T, j, PV, PT, top, bot):
    lin = 0.0
    for q in range(V.shape[1]):
        lin += np.float64(V[j, q]) * (PT[top, q] - PT[bot, q]) + np.float64(T[j, q]) * (PV[top, q] - PV[bot, q])
    return lin


@njit(cache=True, nogil=True)
def _linear_bound_key(V, T, a, PV, PT, rhi, rlo, j, lo, npicks, m):
    """Heap key of an upper bound of j's gain (tau <= 0): the members selected since its last exact
    evaluation add at least sum_l x_l + y_l, computed in O(d) from prefix sums; the margin is far above
    the float rounding of this estimate."""
    lin = _linear_sum(V, T, j, PV, PT, npicks, lo)
    red = rhi[j] + rlo[j]
    est = red + lin
    margin = 1e-9 * (1.0 + (npicks - lo) + abs(red) + abs(lin))
    return -(a[j] - est / m + margin)


@njit(cache=True, nogil=True)
def _add_pairs_exact(V, T, j, SV, ST, lo, npicks, tau, rhi, rlo):
    """red_j += sum_{l in [lo, npicks)} [<v_j,t_l>]_tau + [<v_l,t_j>]_tau, pair by pair (exact)."""
    h = rhi[j]
    r = rlo[j]
    for l in range(lo, npicks):
        x = _dot_exact(V, j, ST, l)
        y = _dot_exact(T, j, SV, l)
        if x > tau:
            h, e = _two_sum(h, x)
            r += e
        if y > tau:
            h, e = _two_sum(h, y)
            r += e
    rhi[j] = h
    rlo[j] = r


@njit(cache=True, nogil=True)
def _subtract_low(V, T, c, b, X, Y, col0, start, stop, SV, ST, tau, eps, h, r):
    """(h, r) minus the exact x_l = <v_c, t_l> and y_l = <t_c, v_l> that are <= tau, for members l in
    [start, stop); the float32 products X[b], Y[b] (columns from member ``col0``) single them out:
    only values with fl32 <= tau + eps are recomputed exactly. Returns (h, r, recomputed)."""
    cut = tau + eps
    redo = 0
    for l in range(start, stop):
        if X[b, l - col0] <= cut:
            redo += 1
            x = _dot_exact(V, c, ST, l)
            if not (x > tau):
                h, e = _two_sum(h, -x)
                r += e
        if Y[b, l - col0] <= cut:
            redo += 1
            y = _dot_exact(T, c, SV, l)
            if not (y > tau):
                h, e = _two_sum(h, -y)
                r += e
    return h, r, redo


@njit(cache=True, nogil=True)
def lazy_extend(V, T, a, tau, eps, target, hk, hi, size, seen, bnd, rhi, rlo, PV, PT, SV, ST, picks, gains, npicks, stats):
    """Run the lazy greedy until ``npicks == target`` (or the heap is empty); returns (size, npicks).

    A stale entry that reaches the top is re-evaluated in two stages:
    1. (tau <= 0 only) an upper bound in O(d): thresholding only raises values when tau <= 0
       ([x]_tau >= x), so the new members add at least <v_j, dT> + <t_j, dV> with dT, dV differences
       of prefix sums; the bound carries a margin far above float rounding. The entry goes back with
       this bound (``bnd`` records when).
    2. if it reaches the top again with a bound from the current step: exact. With few new members,
       pair by pair; otherwise together with the stale entries next in the heap (up to BATCH), whose
       exact evaluation now is work they would need anyway before being selected.
    A fresh entry (evaluated at the current step) at the top is selected.

    ``stats`` (int64[6]) counts: bounds, single exact evaluations, batches, batched candidates,
    member pairs evaluated (blocks included), pairs recomputed exactly for thresholding.
    """
    m = V.shape[0]
    d = V.shape[1]
    lin_ok = tau <= 0.0  # [x]_tau >= x only when tau <= 0 (then thresholding only raises values)
    bidx = np.empty(BATCH, np.int64)
    cuts = np.empty(BATCH + 1, np.int64)
    fresh_k = np.empty(4 * BATCH, np.float64)
    fresh_i = np.empty(4 * BATCH, np.int64)
    xbuf = np.empty(BATCH * max(1, min(target, m)), np.float32)  # products of one batch, reused
    ybuf = np.empty(BATCH * max(1, min(target, m)), np.float32)
    Vb = np.empty((BATCH, d), np.float32)
    Tb = np.empty((BATCH, d), np.float32)
    while npicks < target and size > 0:
        key = hk[0]
        j = hi[0]
        size = _pop(hk, hi, size)
        lo = seen[j]
        if lo == npicks:  # fresh: the key is the exact current gain
            for q in range(d):
                SV[npicks, q] = V[j, q]
                ST[npicks, q] = T[j, q]
                PV[npicks + 1, q] = PV[npicks, q] + V[j, q]
                PT[npicks + 1, q] = PT[npicks, q] + T[j, q]
            picks[npicks] = j
            gains[npicks] = -key
            npicks += 1
            continue
        if lin_ok and bnd[j] != npicks:
            # stage 1: an upper bound of the gain in O(d), no per-member work
            bnd[j] = npicks
            stats[0] += 1
            size = _push(hk, hi, size, _linear_bound_key(V, T, a, PV, PT, rhi, rlo, j, lo, npicks, m), j)
            continue
        # stage 2: exact
        if npicks - lo <= SMALL:
            stats[1] += 1
            stats[4] += npicks - lo
            _add_pairs_exact(V, T, j, SV, ST, lo, npicks, tau, rhi, rlo)
            seen[j] = npicks
            size = _push(hk, hi, size, _exact_key(a, rhi, rlo, j, m), j)
            continue
        # the batch: the next stale entries whose bound is current (those are the likely next
        # picks); a stale entry with an old bound gets its O(d) bound first and goes back
        nb = 1
        bidx[0] = j
        lo_min = lo
        pops = 0
        nfresh = 0
        while nb < BATCH and size > 0 and pops < 4 * BATCH:
            j2 = hi[0]
            k2 = hk[0]
            lo2 = seen[j2]
            size = _pop(hk, hi, size)
            pops += 1
            if lo2 == npicks:  # fresh: set aside, back in the heap after the batch
                fresh_k[nfresh] = k2
                fresh_i[nfresh] = j2
                nfresh += 1
                continue
            if lin_ok and bnd[j2] != npicks:
                stats[0] += 1
                size = _push(hk, hi, size, _linear_bound_key(V, T, a, PV, PT, rhi, rlo, j2, lo2, npicks, m), j2)
                bnd[j2] = npicks
                continue
            bidx[nb] = j2
            nb += 1
            if lo2 < lo_min:
                lo_min = lo2
        for f in range(nfresh):
            size = _push(hk, hi, size, fresh_k[f], fresh_i[f])
        # sort the batch by last evaluation, so that the members each one still needs form a staircase:
        # column block [cuts[i], cuts[i+1]) is needed by the first rows[i] candidates only
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
        for b in range(nb):
            for q in range(d):
                Vb[b, q] = V[bidx[b], q]
                Tb[b, q] = T[bidx[b], q]
        stats[2] += 1
        stats[3] += nb
        Xs = []
        Ys = []
        used = 0
        for i in range(nseg):
            rows = 0
            while rows < nb and seen[bidx[rows]] < cuts[i + 1]:
                rows += 1
            w = cuts[i + 1] - cuts[i]
            X = xbuf[used: used + rows * w].reshape(rows, w)
            Y = ybuf[used: used + rows * w].reshape(rows, w)
            used += rows * w
            np.dot(Vb[:rows], ST[cuts[i]:cuts[i + 1]].T, X)  # fl32(<v_c, t_l>)
            np.dot(Tb[:rows], SV[cuts[i]:cuts[i + 1]].T, Y)  # fl32(<t_c, v_l>)
            Xs.append(X)
            Ys.append(Y)
            stats[4] += rows * (cuts[i + 1] - cuts[i])
        for b in range(nb):
            c = bidx[b]
            lo_c = seen[c]
            h1, l1 = _dot_dd(V, c, PT, npicks, lo_c)
            h2, l2 = _dot_dd(T, c, PV, npicks, lo_c)
            h, e = _two_sum(rhi[c], h1)
            r = rlo[c] + l1 + e
            h, e = _two_sum(h, h2)
            r += l2 + e
            for i in range(nseg):
                if cuts[i + 1] <= lo_c:
                    continue
                h, r, redo = _subtract_low(V, T, c, b, Xs[i], Ys[i], cuts[i], max(cuts[i], lo_c), cuts[i + 1], SV, ST,
                                           tau, eps, h, r)
                stats[5] += redo
            rhi[c] = h
            rlo[c] = r
            seen[c] = npicks
            size = _push(hk, hi, size, _exact_key(a, rhi, rlo, c, m), c)
    return size, npicks
