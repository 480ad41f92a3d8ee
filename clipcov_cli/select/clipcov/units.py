"""ClipCov's unit of work: one class' terms and greedy sequence, from rows the worker reads itself.

A :class:`ClassUnit` is small and picklable: parameters, the corpus sums, the class' label
similarities and a *source* saying where its rows are — a block of the class-major copy made by the
scan (``GroupedSource``, local threads) or rows of the original ``.npy`` parts (``PartsSource``,
read through a memory map by the worker: what a Ray task on another process or node does). Both
give the same float16 rows in the same order, so :func:`run_class_unit` returns the same result
wherever it runs.
"""

from __future__ import annotations

import importlib
import time
from dataclasses import dataclass

import numpy as np
from numba import njit

from clipcov_cli.select.clipcov import terms
from clipcov_cli.select.clipcov.greedy import ClassGreedy
from clipcov_cli.select.clipcov.imatmul import ThreadShare
from clipcov_cli.select.clipcov.kernel_rows import column_sums_and_stats, load_row, scratch_row
from clipcov_cli.select.clipcov.parts import RowBuffers, gather_parts
from clipcov_cli.select.clipcov.rows import F16_TO_F32, as_f16_bits, to_float32
from clipcov_cli.select.clipcov.sources import GroupedRows



@dataclass(frozen=True)
class GroupedSource:
    grouped: GroupedRows
    k: int
    keep: np.ndarray  # bool over the class block: the valid rows
    buffers: RowBuffers | None = None  # the worker thread's reused buffers (rows not kept past the unit)

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return self.grouped.block(self.k, None if self.keep.all() else self.keep, self.buffers)


@dataclass(frozen=True)
class PartsSource:
    parts: tuple  # ((NpyPart img, NpyPart txt, first example index), ...)
    rows: np.ndarray  # example indices of the class' valid rows, ascending

    def load(self) -> tuple[np.ndarray, np.ndarray]:
        return gather_parts(self.parts, self.rows)


@dataclass(frozen=True)
class ClassUnit:
    k: int
    quota: int
    alpha: float
    beta: float
    gamma: float
    tau: float
    r_mode: str  # resolved: "exact" or "mean"
    sum_v: np.ndarray
    sum_t: np.ndarray
    n_valid: int
    label_sim: np.ndarray  # (m,) of the class' valid rows, in key order
    source: object
    keep_state: bool = False  # return the greedy's state, to extend it in place (local threads only)
    threads: ThreadShare | None = None  # torch threads for this unit's worker (see imatmul.ThreadShare)
    forced: np.ndarray | None = None  # positions (among the class' valid rows in key order) the greedy must take first (select --keep)
    force: float = 0.0  # added to the forced rows' scores in the greedy only (above any gain difference)
    order: np.ndarray | None = None  # the rows as loaded, permuted into key order (None: already in key order)

    def with_quota(self, quota: int) -> "ClassUnit":
        from dataclasses import replace

        return replace(self, quota=quota)


@dataclass(frozen=True)
class ClassResult:
    k: int
    picks: np.ndarray  # positions among the class' valid rows in key order, greedy order
    gains: np.ndarray
    r: np.ndarray
    e: np.ndarray
    l: np.ndarray
    c: np.ndarray
    a: np.ndarray
    stats: np.ndarray
    state: object = None  # the ClassGreedy, when the unit asked to keep it
    seconds: float = 0.0  # wall time of the unit (for profiling only; never written out)


@njit(cache=True, nogil=True)
def _row_terms(U, W, out_t, out_v, mu_v, mu_t, e, c, r, with_r):
    """Per row (float16 bits, converted by ``load_row``), in float64 and a fixed order (the same result
    on every engine): e = <v, t>, c = <v, out_t> + <t, out_v>, and (mean identity) r = <t, mu_v> + <v, mu_t>."""
    d = U.shape[1]
    rv, rvb = scratch_row(d)
    rt, rtb = scratch_row(d)
    for i in range(U.shape[0]):
        load_row(U, i, rv, rvb)
        load_row(W, i, rt, rtb)
        ee = 0.0
        c1 = 0.0
        c2 = 0.0
        r1 = 0.0
        r2 = 0.0
        for q in range(d):
            v = np.float64(rv[q])
            t = np.float64(rt[q])
            ee += v * t
            c1 += v * out_t[q]
            c2 += t * out_v[q]
            if with_r:
                r1 += t * mu_v[q]
                r2 += v * mu_t[q]
        e[i] = ee
        c[i] = c1 + c2
        if with_r:
            r[i] = r1 + r2


def class_terms(U: np.ndarray, W: np.ndarray, l: np.ndarray, sum_v, sum_t, n_valid: int, alpha, beta, gamma, tau,
                r_mode: str):
    """(r, e, l, c, a) of one class from its rows as float16 bits (uint16), float64 arithmetic, and the
    rows' screening statistics (``kernel_rows.column_sums_and_stats``)."""
    m = U.shape[0]
    sv_k, st_k, stats = column_sums_and_stats(U, W)
    n_out = n_valid - m
    out_t = (sum_t - st_k) / n_out if n_out else np.zeros_like(sum_t)
    out_v = (sum_v - sv_k) / n_out if n_out else np.zeros_like(sum_v)
    e, c = np.empty(m), np.empty(m)
    if r_mode == "mean":
        r = np.empty(m)
    else:  # O(m^2 d) BLAS products (float64, exact)
        r = terms.representativeness_exact(to_float32(U, F16_TO_F32), to_float32(W, F16_TO_F32), tau)
    _row_terms(U, W, out_t, out_v, sv_k / m, st_k / m, e, c, r, r_mode == "mean")
    l = np.asarray(l, np.float64)
    return r, e, l, c, terms.modular_score(r, e, l, c, alpha, beta, gamma), stats


def run_class_unit(unit: ClassUnit) -> ClassResult:
    """Read the class' rows, compute its terms and its greedy sequence to ``unit.quota`` picks."""
    t0 = time.perf_counter()
    if unit.threads is not None:
        unit.threads.apply()
    U, W = unit.source.load()
    if unit.order is not None:  # key order: the class' arrays do not depend on the order rows come in
        U, W = np.take(U, unit.order, axis=0), np.take(W, unit.order, axis=0)
    U, W = np.ascontiguousarray(U), np.ascontiguousarray(W)
    r, e, l, c, a, stats = class_terms(U, W, unit.label_sim, unit.sum_v, unit.sum_t, unit.n_valid, unit.alpha,
                                       unit.beta, unit.gamma, unit.tau, unit.r_mode)
    a_greedy = a
    if unit.forced is not None:  # kept rows: picked first, so the rest is the greedy seeded with them
        a_greedy = a.copy()
        a_greedy[unit.forced] += unit.force
    g = ClassGreedy(U, W, a_greedy, np.arange(len(a)), unit.tau, row_stats=stats, threads=unit.threads)
    g.extend(unit.quota)
    return ClassResult(unit.k, np.asarray(g.picks, np.int64), np.asarray(g.gains, np.float64), r, e, l, c, a, g.stats,
                       g if unit.keep_state else None, time.perf_counter() - t0)


def warm_up() -> np.ndarray:
    """Load what a unit needs (torch, imported and its int8 product probed; the compiled kernels, from
    numba's cache) by running a tiny class through the same code, so that the first real unit does
    not wait for them. Run in a background thread while the corpus is read; no result depends on it.
    Returns the tiny class' kernel counters."""
    try:  # torch first, alone: a failed import here must not decide the int8 backend
        importlib.import_module("torch")
    except Exception:  # noqa: BLE001 - the units probe torch themselves (imatmul) and fall back if need be
        return np.zeros(0, np.int64)
    rng = np.random.default_rng(0)
    m, d = 160, 16
    X = rng.normal(size=(2, m, d)) + 2.0  # positive cross similarities, as on real data
    X /= np.linalg.norm(X, axis=2, keepdims=True)
    U, W = as_f16_bits(X[0]), as_f16_bits(X[1])
    zeros = np.zeros(d)
    *_, a, stats = class_terms(U, W, np.zeros(m, np.float32), zeros, zeros, m, 2.0, 0.5, 1.0, 0.0, "mean")
    g = ClassGreedy(U, W, a, np.arange(m), 0.0, row_stats=stats, lookahead_min=16)
    g.extend(m - 8)
    return g.stats
