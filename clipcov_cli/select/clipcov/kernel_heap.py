"""The lazy kernel's binary min-heap of (key = -gain bound, position), ties broken by position."""
from __future__ import annotations

from numba import njit


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
