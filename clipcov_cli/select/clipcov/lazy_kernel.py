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
def _dot2(V, T, j, Vs, Ts, l):
    """(<v_j, t_l>, <t_j, v_l>). Exact in any summation order (see module doc), so the compiler may
    reassociate (fastmath) and vectorize."""
    x = 0.0
    y = 0.0
    for q in range(V.shape[1]):
        x += np.float64(V[j, q]) * Ts[l, q]
        y += np.float64(T[j, q]) * Vs[l, q]
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
def lazy_extend(V, T, a, tau, target, hk, hi, size, seen, red, Vs, Ts, picks, gains, npicks):
    """Run the lazy greedy until ``npicks == target`` (or the heap is empty); returns (size, npicks)."""
    m = V.shape[0]
    d = V.shape[1]
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
                Vs[npicks, q] = V[j, q]
                Ts[npicks, q] = T[j, q]
            picks[npicks] = j
            gains[npicks] = -key
            npicks += 1
            continue
        total = red[j]
        for l in range(lo, npicks):
            x, y = _dot2(V, T, j, Vs, Ts, l)
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
