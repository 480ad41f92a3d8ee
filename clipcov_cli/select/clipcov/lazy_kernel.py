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
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload

SMALL = 24  # at most this many new members: evaluate one candidate alone, pair by pair
BATCH = 128  # candidates evaluated together in int8 products
OLD_ROWS = 384  # look-ahead: top a batch up to this many candidates that need the oldest members
POOL = 4 * OLD_ROWS  # ... chosen by fresh O(d) bound among this many entries next in the heap
LOOKAHEAD_MIN = 1024  # ... when the oldest members needed are at least this many (default of ctl[CTL_LOOKAHEAD])
BATCH_CAP = BATCH + OLD_ROWS  # rows of a batch at most
MAX_SEGMENTS = 6  # column blocks of a batch (members sorted by last evaluation: a staircase)
QMAX = 127  # int8 quantization: q = rint(x * QMAX / max |x|)
# control words (int64[CTL]), by name
CTL_SIZE, CTL_PICKS, CTL_PENDING, CTL_SEGMENTS, CTL_CUT, CTL_LOOKAHEAD = range(6)
CTL = 6  # heap size, picks, pending batch size, pending segments, screening cut, look-ahead min
# kernel counters (int64[STATS]), by name (``STAT_NAMES``; read them with ``stat``)
ST_BOUNDS, ST_SINGLE, ST_BATCHES, ST_BATCHED, ST_PAIRS, ST_REDONE, ST_AHEAD = range(7)
STAT_NAMES = ("bounds", "single", "batches", "batched", "pairs", "redone", "ahead")
STATS = len(STAT_NAMES)
# the norms vector (float64[NORMS]): max |v|, max |t|, gamma (dot product rounding), |PV|, |PT|
NORM_V, NORM_T, NORM_GAMMA, NORM_PV, NORM_PT = range(5)
NORMS = 5
INT32_MAX = 2**31 - 1


def stat(stats, name: str) -> int:
    """The kernel counter ``name`` (of ``STAT_NAMES``) of a counters vector (0 if the vector is shorter)."""
    i = STAT_NAMES.index(name)
    return int(stats[i]) if len(stats) > i else 0


def quantization(max_abs: float) -> float:
    """The inverse scale of a modality's int8 quantization, 1 / s = QMAX / max |x| (x = s q + error)."""
    return QMAX / max_abs if max_abs > 0 else 1.0


def screening_error(d: int, inv_v: float, inv_t: float, norm_v: float, norm_t: float) -> float:
    """A rigorous bound of |<v, t> - s_v s_t <q_v, q_t>| for rows of the class (either way round).

    Each quantized value is off by at most s/2 (rint, computed in float64; widened by a relative 1e-9), so
    |v - s_v q_v| <= dv = s_v/2 sqrt(d); then <v,t> - <v^,t^> = <v - v^, t> + <v^, t - t^> is at most
    dv |t| + (|v| + dv) dt (|v|, |t| <= the class' largest row norms). Widened by a relative 1e-6;
    the integer products themselves are exact."""
    dv = 0.5 / inv_v * math.sqrt(d) * (1 + 1e-9)
    dt = 0.5 / inv_t * math.sqrt(d) * (1 + 1e-9)
    e1 = dv * norm_t + (norm_v + dv) * dt
    e2 = dt * norm_v + (norm_t + dt) * dv
    return max(e1, e2) * (1 + 1e-6) + 1e-12


def screening_cut(tau: float, err: float, inv_v: float, inv_t: float) -> int:
    """Integer products D <= cut are recomputed exactly; D > cut proves the cross similarity > tau:
    s_v s_t D >= s_v s_t (cut + 1) > tau + err (one unit of margin over the float rounding here)."""
    c = math.floor((tau + err) * inv_v * inv_t) + 1
    return int(min(max(c, -INT32_MAX), INT32_MAX))


@njit(cache=True, nogil=True)
def _two_sum(a, b):
    s = a + b
    bp = s - a
    return s, (a - (s - bp)) + (b - bp)


@njit(cache=True, nogil=True)
def _load_row_int(U, j, out, out_bits):
    """Row j of float16 bit patterns as float32 values in ``out`` (``out_bits``: the same buffer viewed
    as uint32). Exact for every finite value: normal numbers by re-biasing the exponent (integer
    operations that vectorize), zeros and subnormals (em < 0x400) as em * 2**-24 in a second pass."""
    d = U.shape[1]
    sub = False
    for q in range(d):
        h = np.uint32(U[j, q])
        em = h & np.uint32(0x7FFF)
        sub |= em < np.uint32(0x400)
        out_bits[q] = ((h & np.uint32(0x8000)) << np.uint32(16)) | ((em + np.uint32(0x1C000)) << np.uint32(13))
    if sub:
        for q in range(d):
            h = U[j, q]
            em = h & 0x7FFF
            if em < 0x400:
                v = np.float32(em) * np.float32(5.9604644775390625e-08)
                out[q] = -v if h & 0x8000 else v


@intrinsic
def _half_to_float(typingctx, h):
    """A float16 bit pattern as float32 (``fpext half``: the CPU's conversion instruction, F16C on x86;
    exact for every value)."""
    if h != types.uint16:
        return None

    def codegen(context, builder, sig, args):
        return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())

    return types.float32(types.uint16), codegen


@njit(cache=True, nogil=True)
def _load_row_hw(U, j, out, out_bits):
    """``_load_row_int`` by the CPU's float16 conversion (vectorized: 4x faster here)."""
    for q in range(U.shape[1]):
        out[q] = _half_to_float(U[j, q])


def hardware_conversion_supported() -> bool:
    """Whether numba compiles ``fpext half`` to an instruction for the CPU it targets. Where it does not,
    LLVM emits a call to a runtime helper (``__extendhfsf2``) that numba's JIT cannot resolve: the call
    would crash the process, not raise. x86-64: only with F16C, read from ``NUMBA_CPU_FEATURES`` when
    it is set, else from the host CPU's features unless ``NUMBA_CPU_NAME`` names another CPU (then no:
    its features are not known here); aarch64 always converts natively; other machines: no."""
    import platform

    from numba.core import config

    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine not in ("x86_64", "amd64"):
        return False
    if config.CPU_FEATURES:
        return "+f16c" in config.CPU_FEATURES.split(",")
    if config.CPU_NAME and config.CPU_NAME != "host":
        return False
    from llvmlite import binding

    return bool(binding.get_host_cpu_features().get("f16c", False))


@lru_cache(maxsize=1)
def chosen_load_row():
    """The hardware conversion where it is supported (``hardware_conversion_supported``) and it converts
    every finite float16 bit pattern exactly as the integer version does, else the integer version.
    Either gives the same values (rows with inf or NaN never reach them: the scan excludes them), so no
    result depends on the choice."""
    if not hardware_conversion_supported():
        return _load_row_int
    bits = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).reshape(128, 512)
    want = np.empty(bits.shape, np.float32)
    got = np.empty(bits.shape, np.float32)
    try:
        for j in range(bits.shape[0]):
            _load_row_int(bits, j, want[j], want[j].view(np.uint32))
            _load_row_hw(bits, j, got[j], got[j].view(np.uint32))
    except Exception:  # noqa: BLE001 - any compile failure: the integer version
        return _load_row_int
    finite = (bits & 0x7C00) != 0x7C00
    same = got.view(np.uint32)[finite] == want.view(np.uint32)[finite]
    return _load_row_hw if same.all() else _load_row_int


def load_row(U, j, out, out_bits):
    """Row j of float16 bits ``U`` as float32 values in ``out`` (``out_bits``: its uint32 view), by the
    conversion ``chosen_load_row`` picks. The pick (and its probe) happens on first use: when the first
    kernel calling this is compiled (not when it is loaded from numba's cache: the cache is per CPU),
    or on the first call from Python; importing this module compiles and probes nothing."""
    chosen_load_row()(U, j, out, out_bits)


@overload(load_row, jit_options={"nogil": True})
def _load_row_compiled(U, j, out, out_bits):
    impl = chosen_load_row()

    def load(U, j, out, out_bits):
        impl(U, j, out, out_bits)

    return load


@intrinsic
def _prefetch_line(typingctx, arr, i, q):
    """Hint the CPU to fetch the cache line holding ``arr[i, q]`` (``llvm.prefetch``: read, all
    cache levels). No effect on results."""
    if not (isinstance(arr, types.Array) and arr.ndim == 2):
        return None

    def codegen(context, builder, sig, args):
        ary = context.make_array(sig.args[0])(context, builder, args[0])
        idx = [context.cast(builder, v, t, types.intp) for v, t in zip(args[1:], sig.args[1:])]
        ptr = cgutils.get_item_pointer(context, builder, sig.args[0], ary, idx, wraparound=False)
        i8p, i32 = ir.IntType(8).as_pointer(), ir.IntType(32)
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32]),
                                            "llvm.prefetch.p0i8")
        builder.call(fn, [builder.bitcast(ptr, i8p), i32(0), i32(3), i32(1)])
        return context.get_dummy_value()

    return types.void(arr, i, q), codegen


@njit(cache=True, nogil=True)
def _prefetch_rows_hint(U, W, j):
    for q in range(0, U.shape[1], 32):  # 32 float16 = one 64-byte line
        _prefetch_line(U, j, q)
        _prefetch_line(W, j, q)


@njit(cache=True, nogil=True)
def _prefetch_rows_none(U, W, j):
    pass


@lru_cache(maxsize=1)
def chosen_prefetch():
    """The prefetching version if this numba/LLVM compiles it, else a no-op (the kernel is the same
    either way, only its row reads can wait longer)."""
    try:
        probe = np.zeros((2, 64), np.uint16)
        _prefetch_rows_hint(probe, probe, 1)
        return _prefetch_rows_hint
    except Exception:  # noqa: BLE001 - any compile failure: no hints
        return _prefetch_rows_none


def prefetch_rows(U, W, j):
    """Hint the CPU to fetch rows j of U and W (a heap entry that will be read next), by the version
    ``chosen_prefetch`` picks on first use (as ``load_row``)."""
    chosen_prefetch()(U, W, j)


@overload(prefetch_rows, jit_options={"nogil": True})
def _prefetch_rows_compiled(U, W, j):
    impl = chosen_prefetch()

    def prefetch(U, W, j):
        impl(U, W, j)

    return prefetch


@njit(cache=True, nogil=True)
def scratch_row(d):
    """A float32 row buffer for ``load_row`` and its uint32 view."""
    out = np.empty(d, np.float32)
    return out, out.view(np.uint32)


@njit(cache=True, nogil=True)
def column_sums_and_stats(U, W):
    """Over the class' rows (float16 bits), in one pass: the column sums (exact: float16 values summed
    in float64) and what the int8 screening needs, (max |v_q|, max |t_q|, max |v|, max |t|), norms
    widened by a relative 1e-9 over their float64 rounding. Column by column (vectorizes): maxima
    and exact sums do not depend on the order."""
    d = U.shape[1]
    sv = np.zeros(d)
    st = np.zeros(d)
    av = np.zeros(d, np.float32)  # max |v_q| so far, per column
    at = np.zeros(d, np.float32)
    rv, rvb = scratch_row(d)
    rt, rtb = scratch_row(d)
    mnv = 0.0
    mnt = 0.0
    for i in range(U.shape[0]):
        load_row(U, i, rv, rvb)
        load_row(W, i, rt, rtb)
        for q in range(d):
            sv[q] += rv[q]
            st[q] += rt[q]
            av[q] = max(av[q], abs(rv[q]))
            at[q] = max(at[q], abs(rt[q]))
        mnv = max(mnv, square_norm(rv))
        mnt = max(mnt, square_norm(rt))
    return sv, st, (np.float64(av.max()) if d else 0.0, np.float64(at.max()) if d else 0.0,
                    math.sqrt(mnv) * (1 + 1e-9), math.sqrt(mnt) * (1 + 1e-9))


@njit(cache=True, nogil=True, fastmath=True)
def square_norm(x):
    """|x|^2 in float64, rounded (any order: its users widen it by a relative 1e-9)."""
    s = 0.0
    for q in range(x.shape[0]):
        s += np.float64(x[q]) * np.float64(x[q])
    return s


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
def _top_dot(rv, rt, PV, PT):
    """<v, PT> + <t, PV> in float64 (rounded: see ``_linear_bound_key``)."""
    x = 0.0
    for q in range(rv.shape[0]):
        x += np.float64(rv[q]) * PT[q] + np.float64(rt[q]) * PV[q]
    return x


@njit(cache=True, nogil=True)
def _linear_bound_key(rv, rt, a, PV, PT, norms, bh, bl, rhi, rlo, j, lo, npicks, m):
    """Heap key of an upper bound of j's gain (tau <= 0): the members selected since its last exact
    evaluation add at least sum_l x_l + y_l = <v_j, dT> + <t_j, dV> (dT, dV: sums of those members'
    rows) = _top_dot(now) - (bh[j] + bl[j]) (the exact value stored at its last evaluation), O(d)
    reading only the running sums. The rounded dot product is off by at most gamma (|v| |PT| + |t| |PV|)
    (``norms``: max |v|, max |t|, gamma = 2 (2d) 2**-53, |PV|, |PT|); the margin adds twice that and a
    relative 1e-9 for the rest."""
    stored = bh[j] + bl[j]
    lin = _top_dot(rv, rt, PV, PT) - stored
    red = rhi[j] + rlo[j]
    est = red + lin
    dot_err = norms[NORM_GAMMA] * (norms[NORM_V] * norms[NORM_PT] + norms[NORM_T] * norms[NORM_PV])
    margin = 1e-9 * (1.0 + (npicks - lo) + abs(red) + abs(lin) + abs(stored)) + 2.0 * dot_err
    return -(a[j] - est / m + margin)


@njit(cache=True, nogil=True)
def _add_pairs_exact(rv, rt, j, U, W, picks, lo, npicks, tau, rhi, rlo, bh, bl, mv, mt, mvb, mtb):
    """red_j += sum_{l in [lo, npicks)} [<v_j,t_l>]_tau + [<v_l,t_j>]_tau, pair by pair (exact), and the
    stored <v_j, PT> + <t_j, PV> moves to the current sums: (bh, bl) += the same sum unthresholded."""
    h = rhi[j]
    r = rlo[j]
    g = bh[j]
    s = bl[j]
    for l in range(lo, npicks):
        load_row(W, picks[l], mt, mtb)  # member l's rows (mv, mt: scratch)
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
    rhi[j] = h
    rlo[j] = r
    bh[j] = g
    bl[j] = s


@njit(cache=True, nogil=True)
def _subtract_low(rv, rt, b, xbuf, ybuf, off, w, col0, start, stop, U, W, picks, tau, cut, h, r, mv, mt, mvb, mtb):
    """(h, r) minus the exact x_l = <v_c, t_l> and y_l = <t_c, v_l> that are <= tau, for members l in
    [start, stop); the integer products of row ``b`` of a segment (``w`` columns from member ``col0``,
    stored at ``off`` in ``xbuf``/``ybuf``) single them out: only those <= cut are recomputed exactly.
    Returns (h, r, recomputed)."""
    redo = 0
    base = off + b * w - col0
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
    fresh_k = np.empty(4 * BATCH + POOL, np.float64)
    fresh_i = np.empty(4 * BATCH + POOL, np.int64)
    pool_k = np.empty(POOL, np.float64)
    pool_i = np.empty(POOL, np.int64)
    while npicks < target and size > 0:
        key = hk[0]
        j = hi[0]
        size = _pop(hk, hi, size)
        if size > 0:
            prefetch_rows(U, W, hi[0])  # likely the next entry handled
        lo = seen[j]
        if lo == npicks:  # fresh: the key is the exact current gain
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
        # the batch: the next stale entries whose bound is current (those are the likely next
        # picks); a stale entry with an old bound gets its O(d) bound first and goes back
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
        if npicks - lo_min >= ctl[CTL_LOOKAHEAD]:
            size, nb, nfresh = _look_ahead(U, W, a, lin_ok, hk, hi, size, seen, bnd, bh, bl, rhi, rlo, PV, PT, norms,
                                           stats, npicks, m, bidx, nb, lo_min, fresh_k, fresh_i, nfresh, rv, rt, rvb,
                                           rtb, pool_k, pool_i)
            for b in range(nb):
                lo_min = min(lo_min, seen[bidx[b]])
        for f in range(nfresh):
            size = _push(hk, hi, size, fresh_k[f], fresh_i[f])
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
        ctl[CTL_SIZE] = size
        ctl[CTL_PICKS] = npicks
        ctl[CTL_PENDING] = nb
        ctl[CTL_SEGMENTS] = nseg
        return 1
    ctl[CTL_SIZE] = size
    ctl[CTL_PICKS] = npicks
    return 0
