"""Reading a class' rows for the lazy kernel: float16 bit patterns converted exactly to float32 (in
hardware where the CPU has it, picked on first use), prefetch hints, scratch rows and the rows'
screening statistics."""
from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic, overload


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
    # the chosen version's own Python function is the implementation: compiled in place of the call. A
    # wrapper calling the chosen dispatcher instead made the row loops ~1.5x slower (the conversion no
    # longer vectorized with the loop around it)
    return chosen_load_row().py_func


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
    return chosen_prefetch().py_func  # as ``load_row``'s


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
