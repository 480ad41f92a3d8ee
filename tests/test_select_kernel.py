"""The lazy kernel's building blocks against brute force: float16 row conversion, the int8 screening
bound and cut, and the integer products (torch's and the float fallback)."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest

from clipcov_cli.select.clipcov import imatmul, kernel_exact, kernel_rows, kernel_state
from clipcov_cli.select.methods import ClipCovSelector
from tests.select_helpers import clustered, embedding_set, unit


@pytest.mark.parametrize("name", ["load_row", "_load_row_int", "_load_row_hw"])
def test_load_row_is_exact_on_every_finite_float16(name):
    """The conversion in use, and both it is picked from (the CPU's instruction, the integer one)."""
    if name == "_load_row_hw" and not kernel_rows.hardware_conversion_supported():
        pytest.skip("numba does not compile float16 conversions to an instruction for this CPU (calling it would crash)")
    load = getattr(kernel_rows, name)
    bits = np.arange(65536, dtype=np.uint16)
    bits = bits[np.isfinite(bits.view(np.float16))]  # zeros, subnormals, normals, both signs
    pad = (-len(bits)) % 64
    rows = np.concatenate([bits, np.zeros(pad, np.uint16)]).reshape(-1, 64)
    out = np.empty(64, np.float32)
    for j in range(rows.shape[0]):
        load(rows, j, out, out.view(np.uint32))
        want = rows[j].view(np.float16).astype(np.float32)
        assert np.array_equal(out.view(np.uint32), want.view(np.uint32)), j


def test_the_hardware_float16_conversion_is_picked_where_it_compiles():
    """The pick falls back to the integer version only when the hardware one fails to compile or to
    convert (a probe bug that always fell back would be silent otherwise: the results are the same)."""
    import platform

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("the expectation below is for x86-64 (F16C); other CPUs may take either version")
    flags = open("/proc/cpuinfo").read().split() if platform.system() == "Linux" else []
    if "f16c" not in flags:
        pytest.skip("this CPU has no F16C instructions")
    assert kernel_rows.chosen_load_row() is kernel_rows._load_row_hw


@pytest.mark.parametrize("env,hardware", [
    ({"NUMBA_CPU_NAME": "generic"}, False),  # no F16C: LLVM would call a helper numba cannot resolve (a crash)
    ({"NUMBA_CPU_NAME": "sandybridge", "NUMBA_CPU_FEATURES": "+avx,+sse4.2,+popcnt"}, False),
    ({"NUMBA_CPU_NAME": "sandybridge", "NUMBA_CPU_FEATURES": "+avx,+sse4.2,+popcnt,+f16c"}, True),
    ({"NUMBA_CPU_NAME": "host"}, None),  # the host's own features decide
])
def test_the_float16_conversion_follows_the_cpu_numba_compiles_for(tmp_path, env, hardware):
    """Compiling for a CPU without F16C falls back to the integer conversion instead of crashing, and
    converts exactly (numba's cache for that CPU goes to tmp_path)."""
    import os
    import platform
    import subprocess
    import sys

    if platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("x86-64 CPU names")
    code = ("import numpy as np; from clipcov_cli.select.clipcov import kernel_rows as K; "
            "bits = np.arange(0x7C00, dtype=np.uint16).reshape(-1, 512); out = np.empty(512, np.float32); "
            "ok = all(K.load_row(bits, j, out, out.view(np.uint32)) is None and "
            "np.array_equal(out, bits[j].view(np.float16).astype(np.float32)) for j in range(len(bits))); "
            "print(K.chosen_load_row() is K._load_row_hw, ok)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600,
                       env={**os.environ, **env, "NUMBA_CACHE_DIR": str(tmp_path)})
    assert r.returncode == 0, r.stderr[-2000:]
    if hardware is None:
        hardware = "f16c" in open("/proc/cpuinfo").read().split() if platform.system() == "Linux" else None
        if hardware is None:
            pytest.skip("the host's features are read from /proc/cpuinfo here")
    assert r.stdout.split() == [str(hardware), "True"]


def test_importing_the_kernel_compiles_and_probes_nothing():
    """The float16 conversion and the prefetch hints are picked (compiled and probed) on first use, not
    at import: a fresh interpreter importing the kernel has run neither probe."""
    import subprocess
    import sys

    code = ("from clipcov_cli.select.clipcov import lazy_kernel, kernel_rows as K; "
            "print(K.chosen_load_row.cache_info().currsize, K.chosen_prefetch.cache_info().currsize)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["0", "0"]


def _quantize(X: np.ndarray, inv: float) -> np.ndarray:
    return np.clip(np.rint(X.astype(np.float64) * inv), -127, 127).astype(np.int8)


@pytest.mark.parametrize("d,scale", [(8, 1.0), (64, 1.0), (512, 1.0), (64, 3.7)])
def test_screening_bound_holds_for_every_pair(d, scale):
    """|<v, t> - s_v s_t <q_v, q_t>| <= E for every pair, rows unit or not, and a product above the cut
    proves <v, t> > tau."""
    rng = np.random.default_rng(d)
    V = (rng.normal(size=(300, d)) * scale / np.sqrt(d)).astype(np.float16)
    T = (rng.normal(size=(300, d)) * scale / np.sqrt(d) + 0.3 * V.astype(np.float32)).astype(np.float16)
    V64, T64 = V.astype(np.float64), T.astype(np.float64)
    inv_v, inv_t = kernel_state.quantization(np.abs(V64).max()), kernel_state.quantization(np.abs(T64).max())
    norm_v, norm_t = np.linalg.norm(V64, axis=1).max(), np.linalg.norm(T64, axis=1).max()
    err = kernel_state.screening_error(d, inv_v, inv_t, norm_v * (1 + 1e-9), norm_t * (1 + 1e-9))
    D = _quantize(V, inv_v).astype(np.int64) @ _quantize(T, inv_t).astype(np.int64).T
    X = V64 @ T64.T  # exact for float16 values
    assert np.all(np.abs(X - D / (inv_v * inv_t)) <= err)
    for tau in (0.0, 0.05, float(np.median(X))):
        cut = kernel_state.screening_cut(tau, err, inv_v, inv_t)
        assert np.all(X[D > cut] > tau)
        assert (D <= cut).any() or X.min() > tau


def test_int8_products_are_exact_with_torch_and_with_the_float_fallback():
    rng = np.random.default_rng(1)
    A = rng.integers(-127, 128, (37, 512), dtype=np.int8)
    B = rng.integers(-127, 128, (1000, 512), dtype=np.int8)
    want = A.astype(np.int64) @ B.astype(np.int64).T
    assert imatmul.backend() == "torch-int8"  # torch is a dependency: its int8 product must be the one used
    assert np.array_equal(imatmul.int8_products(A, B), want)
    assert np.array_equal(imatmul.float_products(A, B), want)
    big = rng.integers(-127, 128, (3, 2000), dtype=np.int8)  # d * 127**2 >= 2**24: float64 products
    assert np.array_equal(imatmul.float_products(big, big), big.astype(np.int64) @ big.astype(np.int64).T)


def test_float_fallback_gives_the_same_selection(monkeypatch):
    """The int8 products only screen: with the float fallback the selection is bit for bit the same."""
    import clipcov_cli.select.clipcov.greedy as greedy

    V, T, labels, Z = clustered(700, 16, 2, seed=3, spread=2.0)
    emb = embedding_set(V, T, labels, Z)
    a = ClipCovSelector(tau=0.0).select(emb, 500)
    monkeypatch.setattr(greedy, "int8_products", imatmul.float_products)
    b = ClipCovSelector(tau=0.0).select(emb, 500)
    assert a.indices.tolist() == b.indices.tolist() and a.score.tolist() == b.score.tolist()


def test_thread_share_is_applied_by_the_worker_thread():
    """torch's thread count is per thread: a running worker picks up a raised share itself."""
    import threading

    import torch

    share = imatmul.ThreadShare(1)
    seen, raised, done = [], threading.Event(), threading.Event()

    def worker():
        share.apply()
        seen.append(torch.get_num_threads())
        raised.wait(10)
        share.apply()
        seen.append(torch.get_num_threads())
        done.set()

    t = threading.Thread(target=worker)
    t.start()
    while not seen:
        pass
    share.n = 2
    raised.set()
    t.join(10)
    assert done.is_set() and seen == [1, 2]


def test_warm_up_runs_the_unit_code_it_stands_in_for():
    """The background warm-up swallows its errors (the units report them), so it is run bare here: it
    must go through the terms, the batched int8 stage and the look-ahead without failing."""
    from clipcov_cli.select.clipcov import units

    bounds, single, batches, batched, pairs, redone, ahead = units.warm_up().tolist()
    assert batches > 0 and ahead > 0
    assert imatmul.backend() in ("torch-int8", "blas-float")


def test_row_gather_checks_its_rows(tmp_path):
    """Rows are gathered with numpy's unbuffered take (mode="clip"), so out-of-range rows must be refused
    before, not clipped to the last row."""
    from clipcov_cli.select.clipcov.parts import NpyPart

    X = np.arange(40, dtype=np.float16).reshape(10, 4)
    np.save(tmp_path / "x.npy", X)
    part = NpyPart.open(tmp_path / "x.npy")
    out = np.empty((3, 4), np.uint16)
    part.take_into(np.array([1, 5, 9]), out, populate=True)
    assert np.array_equal(out.view(np.float16), X[[1, 5, 9]])
    with pytest.raises(IndexError):
        part.take_into(np.array([1, 5, 10]), out)


def _exact(x) -> Fraction:
    return Fraction(float(x))


@pytest.mark.parametrize("picks", [1, 300, 40_000])
def test_top_dot_products_are_exact_both_ways(picks):
    """<v, PT> + <t, PV> as an exact (hi, lo) pair, by integer sums (unit rows) and by TwoSum (the
    fallback for large values), against rational arithmetic; the dispatcher picks the integer path
    only within its limit."""
    d = 512
    rng = np.random.default_rng(picks)
    for trial in range(20):
        scale = [1.0, 1e-3, 1e-6][trial % 3]  # small values: subnormal float16 products
        v, t = ((rng.normal(size=d) / np.sqrt(d) * scale).astype(np.float16).astype(np.float32) for _ in range(2))
        rows = (rng.normal(size=(2, min(picks, 64), d)) / np.sqrt(d)).astype(np.float16).astype(np.float64)
        PV, PT = rows[0].sum(0) * (picks / rows.shape[1]), rows[1].sum(0) * (picks / rows.shape[1])
        PV, PT = (np.round(P * 2**24) / 2**24 for P in (PV, PT))  # on the float16 grid, as running sums are
        want = sum(_exact(v[q]) * _exact(PT[q]) + _exact(t[q]) * _exact(PV[q]) for q in range(d))
        for hi, lo in (kernel_exact._top_int(v, t, PV, PT), kernel_exact._top_two_sum(v, t, PV, PT)):
            assert _exact(hi) + _exact(lo) == want
        norms = np.array([1.0, 1.0, 0.0, np.linalg.norm(PV), np.linalg.norm(PT)])
        hi, lo = kernel_exact._top_dd(v, t, PV, PT, norms)
        assert _exact(hi) + _exact(lo) == want
        assert (hi, lo) == kernel_exact._top_int(v, t, PV, PT)  # unit rows: the integer path
    big = np.full(d, 3.0e4, np.float32)  # |p| far above the integer path's limit: TwoSum
    P = np.full(d, 2.0**20)
    norms = np.array([np.linalg.norm(big)] * 2 + [0.0] + [np.linalg.norm(P)] * 2)
    hi, lo = kernel_exact._top_dd(big, big, P, P, norms)
    assert _exact(hi) + _exact(lo) == 2 * d * _exact(3.0e4) * _exact(2.0**20)
    assert (hi, lo) == kernel_exact._top_two_sum(big, big, P, P)


def test_scan_flags_every_special_float16_and_sums_the_rest():
    """NaN and inf (any sign or payload) in either modality flag a row as NaN; an all-zero row (either
    sign of zero) in either modality as zero; a row off unit norm (beyond the tolerance) as off-norm;
    the sums take exactly the other rows."""
    from clipcov_cli.select.clipcov.rows import NORM_TOLERANCE, _scan_rows

    d = 40
    rng = np.random.default_rng(5)
    V = unit(rng.normal(size=(200, d))).astype(np.float16)
    T = unit(rng.normal(size=(200, d))).astype(np.float16)
    V[3, 7] = np.inf
    V[4, 0] = -np.inf
    T[5, 39] = np.nan
    T[6] = np.frombuffer(np.uint16(0x7E01).tobytes() * d, np.float16)  # NaN with a payload
    V[7] = 0
    T[8] = -0.0
    V[9] = np.float16(2.0**-24)  # subnormal, not zero: off unit norm
    V[10, 1] = np.float16(65504)  # the largest finite value: off unit norm
    T[11] *= np.float16(1 + 2 * NORM_TOLERANCE)  # just off
    T[12] *= np.float16(1 + NORM_TOLERANCE / 2)  # within the tolerance: kept
    valid = np.empty(200, bool)
    sv, st = np.zeros(d), np.zeros(d)
    nan, zero, off = _scan_rows(V.view(np.uint16), T.view(np.uint16), valid, sv, st)
    bad = ~(np.isfinite(V).all(1) & np.isfinite(T).all(1))
    zeros = ~bad & ((V == 0).all(1) | (T == 0).all(1))
    assert nan == bad.sum() == 4 and zero == zeros.sum() == 2 and off == 3
    assert np.array_equal(valid, ~(bad | zeros) & ~np.isin(np.arange(200), [9, 10, 11])) and valid[12]
    assert np.array_equal(sv, V[valid].astype(np.float64).sum(0))
    assert np.array_equal(st, T[valid].astype(np.float64).sum(0))


def test_row_buffers_are_reused_per_thread_and_bounded():
    import threading

    from clipcov_cli.select.clipcov.parts import RowBuffers

    buffers = RowBuffers(max_rows=100)
    a, _ = buffers.get(50, 8)
    b, _ = buffers.get(30, 8)
    assert np.shares_memory(a, b) and b.shape == (30, 8)
    c, _ = buffers.get(80, 8)  # grows
    d, _ = buffers.get(80, 8)
    assert np.shares_memory(c, d) and not np.shares_memory(a, c)
    big, _ = buffers.get(500, 8)  # above max_rows: fresh, not kept
    assert not np.shares_memory(big, buffers.get(80, 8)[0])
    other = []
    thread = threading.Thread(target=lambda: other.append(buffers.get(80, 8)[0]))
    thread.start()
    thread.join()
    assert not np.shares_memory(other[0], d)
