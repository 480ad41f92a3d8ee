"""ClipCov's row checks and conversions (compiled): the scan's flags and exact corpus sums, float16 bit
patterns to float32, and the class-major position of every row."""

from __future__ import annotations

import numpy as np
from numba import njit

from clipcov_cli.select.base import NORM_TOLERANCE
from clipcov_cli.select.clipcov.kernel_rows import load_row, scratch_row

F16_TO_F32 = np.arange(65536, dtype=np.uint16).view(np.float16).astype(np.float32)  # exact table


@njit(cache=True, nogil=True, fastmath=True)
def _squared_norm(r):
    """Sum of squares of a float32 row, in any order (fastmath: it vectorizes); for a tolerance
    check only, never for the sums."""
    s = np.float32(0.0)
    for q in range(r.shape[0]):
        s += r[q] * r[q]
    return s


@njit(cache=True, nogil=True)
def _scan_rows(U, W, valid, sum_v, sum_t, norm_tol=NORM_TOLERANCE):
    """Flag rows (NaN/inf in either modality, else zero norm in either, else a norm off 1 by more
    than ``norm_tol`` in either) and add valid rows to the corpus sums (exact: float16 values in
    float64). Returns (nan, zero, off_norm) counts. U, W: float16 bit patterns (uint16). The flags are
    OR-reduced bit tests, the rows converted by ``load_row``: both vectorize."""
    nan = 0
    zero = 0
    off = 0
    d = U.shape[1]
    rv, rvb = scratch_row(d)
    rt, rtb = scratch_row(d)
    lo, hi = (1.0 - norm_tol) ** 2, (1.0 + norm_tol) ** 2
    for i in range(U.shape[0]):
        special = np.uint32(0)  # bit 15 set: some exponent all ones (inf or NaN)
        nz_u = np.uint32(0)
        nz_w = np.uint32(0)
        for q in range(d):
            u = np.uint32(U[i, q])
            w = np.uint32(W[i, q])
            special |= (u & np.uint32(0x7C00)) + np.uint32(0x400)
            special |= (w & np.uint32(0x7C00)) + np.uint32(0x400)
            nz_u |= u & np.uint32(0x7FFF)
            nz_w |= w & np.uint32(0x7FFF)
        if special & np.uint32(0x8000):
            valid[i] = False
            nan += 1
        elif nz_u == 0 or nz_w == 0:
            valid[i] = False
            zero += 1
        else:
            load_row(U, i, rv, rvb)
            load_row(W, i, rt, rtb)
            nv = _squared_norm(rv)
            nt = _squared_norm(rt)
            if not (lo <= nv <= hi and lo <= nt <= hi):
                valid[i] = False
                off += 1
                continue
            valid[i] = True
            for q in range(d):
                sum_v[q] += rv[q]
                sum_t[q] += rt[q]
    return nan, zero, off


@njit(cache=True, nogil=True)
def to_float32(U, lut):
    """float16 bit patterns (uint16, 2-D) to float32 values (exact)."""
    out = np.empty(U.shape, np.float32)
    for i in range(U.shape[0]):
        for q in range(U.shape[1]):
            out[i, q] = lut[U[i, q]]
    return out


@njit(cache=True)
def class_positions(labels, k):
    """Class-major position of every row (ascending row index within a class) and class starts."""
    counts = np.zeros(k, np.int64)
    for y in labels:
        counts[y] += 1
    starts = np.zeros(k + 1, np.int64)
    for c in range(k):
        starts[c + 1] = starts[c] + counts[c]
    cursor = starts[:k].copy()
    dest = np.empty(labels.shape[0], np.int64)
    for i in range(labels.shape[0]):
        dest[i] = cursor[labels[i]]
        cursor[labels[i]] += 1
    return dest, starts


def as_f16_bits(a: np.ndarray) -> np.ndarray:
    """Rows as float16 bit patterns (float32 input is rounded to float16 first, as ClipCov specifies)."""
    a = np.ascontiguousarray(a)
    if a.dtype != np.float16:
        a = a.astype(np.float16)
    return a.view(np.uint16)


def scan_chunk(U: np.ndarray, W: np.ndarray, valid: np.ndarray) -> tuple:
    """One chunk's flags (into ``valid``), sums and counts: (sum_v, sum_t, nan, zero, off_norm)."""
    sum_v, sum_t = np.zeros(U.shape[1]), np.zeros(U.shape[1])
    nan, zero, off = _scan_rows(U, W, valid, sum_v, sum_t)
    return sum_v, sum_t, nan, zero, off
