"""The lazy greedy's inner loop for one class, compiled with numba.

State lives in numpy arrays owned by the caller (so a class can be extended later): a binary
max-heap of (gain bound, position) stored as (key = -bound, position) min-heap arrays, the cached
redundancy sums ``red`` and the pick count each was last evaluated at, ``seen``.

Dot products run in float64 over float16-valued inputs: each product is exact and so is every
partial sum (multiples of 2**-48 below 2 in magnitude), so they equal the plain greedy's BLAS
results bit for bit; redundancy sums add one term at a time in selection order, as the plain
greedy does.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, fastmath=True)
def _dot2diff(V, T, j, PV, PT, l):
    """(<v_j, t_l>, <t_j, v_l>) with member l's rows recovered exactly from prefix sums. Exact in
    any summation order (see module doc), so the compiler may reassociate (fastmath) and vectorize."""
    x = 0.0
    y = 0.0
    for q in range(V.shape[1]):
        x += np.float64(V[j, q]) * (PT[l + 1, q] - PT[l, q])
        y += np.float64(T[j, q]) * (PV[l + 1, q] - PV[l, q])
    return x, y


@njit(cache=True, inline="always")
def _less(hk, hi, a, b):
    return hk[a] < hk[b] or (hk[a] == hk[b] and hi[a] < hi[b])


@njit(cache=True)
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


@njit(cache=True)
def _sift_up(hk, hi, pos):
    while pos > 0:
        parent = (pos - 1) // 2
        if not _less(hk, hi, pos, parent):
            return
        hk[pos], hk[parent] = hk[parent], hk[pos]
        hi[pos], hi[parent] = hi[parent], hi[pos]
        pos = parent


@njit(cache=True)
def heapify(hk, hi):
    for pos in range(hk.shape[0] // 2 - 1, -1, -1):
        _sift_down(hk, hi, hk.shape[0], pos)


@njit(cache=True)
def lazy_extend(V, T, a, tau, target, hk, hi, size, seen, bnd, red, PV, PT, picks, gains, npicks):
    """Run the lazy greedy until ``npicks == target`` (or the heap is empty); returns (size, npicks).

    ``PV``/``PT`` hold prefix sums of the selected members' rows (row k = sum of the first k picks;
    sums of float16 values are exact in float64), so a member's row is an exact difference.

    A stale entry that reaches the top is re-evaluated in two stages:
    1. (tau <= 0 only) an upper bound in O(d): thresholding only raises values when tau <= 0
       ([x]_tau >= x), so the new members add at least sum(x + y) = <v_j, dT> + <t_j, dV> with dT,
       dV differences of prefix sums; the bound carries a margin far above float rounding. The entry
       goes back with this bound (``bnd`` records when).
    2. if it reaches the top again with a bound from the current step: exact, one member at a time
       in selection order, as the plain greedy sums.
    """
    m = V.shape[0]
    d = V.shape[1]
    lin_ok = tau <= 0.0  # [x]_tau >= x only when tau <= 0 (then thresholding only raises values)
    while npicks < target and size > 0:
        key = hk[0]
        j = hi[0]
        size -= 1
        hk[0] = hk[size]
        hi[0] = hi[size]
        _sift_down(hk, hi, size, 0)
        lo = seen[j]
        if lo == npicks:  # fresh: the key is the exact current gain
            for q in range(d):
                PV[npicks + 1, q] = PV[npicks, q] + V[j, q]
                PT[npicks + 1, q] = PT[npicks, q] + T[j, q]
            picks[npicks] = j
            gains[npicks] = -key
            npicks += 1
            continue
        if lin_ok and bnd[j] != npicks:
            # stage 1: an upper bound of the gain in O(d), no per-member work
            lin = 0.0
            for q in range(d):
                lin += np.float64(V[j, q]) * (PT[npicks, q] - PT[lo, q]) + np.float64(T[j, q]) * (PV[npicks, q] - PV[lo, q])
            est = red[j] + lin
            margin = 1e-9 * (1.0 + (npicks - lo) + abs(red[j]) + abs(lin))
            bnd[j] = npicks
            hk[size] = -(a[j] - est / m + margin)
            hi[size] = j
            _sift_up(hk, hi, size)
            size += 1
            continue
        # stage 2: exact, one member at a time in selection order
        total = red[j]
        for l in range(lo, npicks):
            x, y = _dot2diff(V, T, j, PV, PT, l)
            sx = x if x > tau else 0.0
            sy = y if y > tau else 0.0
            total = total + (sx + sy)
        red[j] = total
        seen[j] = npicks
        hk[size] = -(a[j] - total / m)
        hi[size] = j
        _sift_up(hk, hi, size)
        size += 1
    return size, npicks
