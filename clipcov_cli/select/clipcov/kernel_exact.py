"""Exact arithmetic of the lazy kernel: TwoSum, exact dot products of float16 rows with the running
sums (as double-double pairs), int8 quantization of a row, the O(d) gain bound and the exact
per-pair and thresholded sums (see ``lazy_kernel``'s docstring for why they are exact). The functions
on the kernel's state take its records (``kernel_state``) and are inlined by numba where they are
called (``inline="always"``: compiled apart, each would take every field of the records as an
argument, which made the kernel's cold compile ~20% slower)."""
from __future__ import annotations

import numpy as np
from numba import njit

from clipcov_cli.select.clipcov.kernel_rows import load_row
from clipcov_cli.select.clipcov.kernel_state import NORM_GAMMA, NORM_PT, NORM_PV, NORM_T, NORM_V, QMAX


@njit(cache=True, nogil=True)
def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(cache=True, nogil=True)
def _quantize_row(x, inv_s, out):
    for q in range(x.shape[0]):
        v = np.rint(np.float64(x[q]) * inv_s)
        if v > QMAX:
            v = QMAX
        elif v < -QMAX:
            v = -QMAX
        out[q] = np.int8(v)


@njit(cache=True, nogil=True, fastmath=True)
def _dot_exact(x, y):
    """<x, y> in float64: exact for float16-valued rows in any order (so fastmath may vectorize)."""
    s = 0.0
    for q in range(x.shape[0]):
        s += np.float64(x[q]) * np.float64(y[q])
    return s


@njit(cache=True, nogil=True)
def _top_dd(rv, rt, PV, PT, norms):
    """The exact <v, PT> + <t, PV> as (hi, lo). Each product is exact (a multiple of 2**-48); while
    they stay below ``_top_int``'s limit (``norms``: max |v|, max |t|, ..., |PV|, |PT|, see
    ``_linear_bound_key``; always so for unit rows) they are summed as integers, else with TwoSum."""
    lim = 2.0 ** 33 / (2 * rv.shape[0])
    if norms[NORM_V] * norms[NORM_PT] < lim and norms[NORM_T] * norms[NORM_PV] < lim:
        return _top_int(rv, rt, PV, PT)
    return _top_two_sum(rv, rt, PV, PT)


@njit(cache=True, nogil=True)
def _top_int(rv, rt, PV, PT):
    """``_top_dd`` by integer sums (vectorizes): a product p (a multiple of 2**-48, |p| < 2**33 / 2d) is
    a 2**-20 + b 2**-48 with integers a = trunc(p 2**20) and |b| < 2**28, every step exact; the sums
    of the a and of the b are exact in int64 and stay below 2**53, so both convert to float64 exactly."""
    A = np.int64(0)
    B = np.int64(0)
    for q in range(rv.shape[0]):
        p = np.float64(rv[q]) * PT[q]
        a = np.int64(p * 1048576.0)
        A += a
        B += np.int64((p - np.float64(a) * 9.5367431640625e-07) * 281474976710656.0)
        p = np.float64(rt[q]) * PV[q]
        a = np.int64(p * 1048576.0)
        A += a
        B += np.int64((p - np.float64(a) * 9.5367431640625e-07) * 281474976710656.0)
    return _two_sum(np.float64(A) * 9.5367431640625e-07, np.float64(B) * 3.552713678800501e-15)


@njit(cache=True, nogil=True)
def _top_two_sum(rv, rt, PV, PT):
    """``_top_dd`` for any magnitudes: the products added with TwoSum, their errors summed apart."""
    hi = 0.0
    lo = 0.0
    for q in range(rv.shape[0]):
        hi, e = _two_sum(hi, np.float64(rv[q]) * PT[q])
        lo += e
        hi, e = _two_sum(hi, np.float64(rt[q]) * PV[q])
        lo += e
    return hi, lo


@njit(cache=True, nogil=True)
def _exact_key(a, rhi, rlo, j, m):
    return -(a[j] - (rhi[j] + rlo[j]) / m)


@njit(cache=True, nogil=True, fastmath=True)
def _top_dot(rv, rt, PV, PT):
    """<v, PT> + <t, PV> in float64 (rounded: see ``_linear_bound_key``)."""
    x = 0.0
    for q in range(rv.shape[0]):
        x += np.float64(rv[q]) * PT[q] + np.float64(rt[q]) * PV[q]
    return x


@njit(cache=True, nogil=True, inline="always")
def _linear_bound_key(rows, cand, mem, scr, j, npicks):
    """Heap key of an upper bound of j's gain (tau <= 0; j's rows in ``scr.rv``, ``scr.rt``): the members
    selected since its last exact evaluation add at least sum_l x_l + y_l = <v_j, dT> + <t_j, dV> (dT,
    dV: sums of those members' rows) = _top_dot(now) - (bh[j] + bl[j]) (the exact value stored at its
    last evaluation), O(d) reading only the running sums. The rounded dot product is off by at most
    gamma (|v| |PT| + |t| |PV|) (``norms``: max |v|, max |t|, gamma = 2 (2d) 2**-53, |PV|, |PT|); the
    margin adds twice that and a relative 1e-9 for the rest."""
    norms = mem.norms
    stored = cand.bh[j] + cand.bl[j]
    lin = _top_dot(scr.rv, scr.rt, mem.PV, mem.PT) - stored
    red = cand.rhi[j] + cand.rlo[j]
    est = red + lin
    dot_err = norms[NORM_GAMMA] * (norms[NORM_V] * norms[NORM_PT] + norms[NORM_T] * norms[NORM_PV])
    margin = 1e-9 * (1.0 + (npicks - cand.seen[j]) + abs(red) + abs(lin) + abs(stored)) + 2.0 * dot_err
    return -(rows.a[j] - est / rows.U.shape[0] + margin)


@njit(cache=True, nogil=True, inline="always")
def _add_pairs_exact(rows, cand, mem, scr, j, lo, npicks):
    """red_j += sum_{l in [lo, npicks)} [<v_j,t_l>]_tau + [<v_l,t_j>]_tau, pair by pair (exact; j's rows in
    ``scr.rv``, ``scr.rt``), and the stored <v_j, PT> + <t_j, PV> moves to the current sums: (bh, bl) +=
    the same sum unthresholded."""
    U, W, tau, picks = rows.U, rows.W, rows.tau, mem.picks  # fields read once, not per member
    rv, rt, mv, mt, mvb, mtb = scr.rv, scr.rt, scr.mv, scr.mt, scr.mvb, scr.mtb
    h = cand.rhi[j]
    r = cand.rlo[j]
    g = cand.bh[j]
    s = cand.bl[j]
    for l in range(lo, npicks):
        load_row(W, picks[l], mt, mtb)  # member l's rows
        load_row(U, picks[l], mv, mvb)
        x = _dot_exact(rv, mt)
        y = _dot_exact(rt, mv)
        g, e = _two_sum(g, x)
        s += e
        g, e = _two_sum(g, y)
        s += e
        if x > tau:
            h, e = _two_sum(h, x)
            r += e
        if y > tau:
            h, e = _two_sum(h, y)
            r += e
    cand.rhi[j] = h
    cand.rlo[j] = r
    cand.bh[j] = g
    cand.bl[j] = s


@njit(cache=True, nogil=True, inline="always")
def _subtract_low(rows, mem, batch, scr, b, i, start, cut, h, r):
    """(h, r) minus the exact x_l = <v_c, t_l> and y_l = <t_c, v_l> that are <= tau (c: the batch's row
    ``b``, its rows in ``scr.rv``, ``scr.rt``), for members l in [start, cuts[i + 1]) of column block
    ``i``; the block's integer products (stored at ``seg_off[i]`` in ``xbuf``/``ybuf``) single them
    out: only those <= cut are recomputed exactly. Returns (h, r, recomputed)."""
    col0 = batch.cuts[i]
    stop = batch.cuts[i + 1]
    xbuf, ybuf = batch.xbuf, batch.ybuf  # fields read once, not per member
    U, W, tau, picks = rows.U, rows.W, rows.tau, mem.picks
    rv, rt, mv, mt, mvb, mtb = scr.rv, scr.rt, scr.mv, scr.mt, scr.mvb, scr.mtb
    redo = 0
    base = batch.seg_off[i] + b * (stop - col0) - col0
    for l in range(start, stop):
        if xbuf[base + l] <= cut:
            redo += 1
            h, r = _minus_if_low(rv, W, picks[l], mt, mtb, tau, h, r)  # x_l = <v_c, t_l>
        if ybuf[base + l] <= cut:
            redo += 1
            h, r = _minus_if_low(rt, U, picks[l], mv, mvb, tau, h, r)  # y_l = <t_c, v_l>
    return h, r, redo


@njit(cache=True, nogil=True)
def _minus_if_low(row, M, p, m, mb, tau, h, r):
    """(h, r) minus the exact <row, M_p> if it is <= tau (``m``, ``mb``: scratch for M's row p)."""
    load_row(M, p, m, mb)
    x = _dot_exact(row, m)
    if not (x > tau):
        h, e = _two_sum(h, -x)
        r += e
    return h, r
