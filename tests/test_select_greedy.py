"""The lazy per-class greedy merged by gain equals the plain greedy exactly: same picks, same order."""

from __future__ import annotations

import os

import numpy as np
import pytest

from clipcov_cli.select.clipcov import kernel_state
from clipcov_cli.select.clipcov.greedy import ClassGreedy, merge_sequences, plain_greedy
from clipcov_cli.select.methods import ClipCovSelector
from tests.select_helpers import clustered, embedding_set


def run_clipcov(V, T, labels, Z, budget, tau, r_mode="exact"):
    emb = embedding_set(V, T, labels, Z)
    sel = ClipCovSelector(tau=tau, r_mode=r_mode).select(emb, budget)
    return emb, sel


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tau", [0.0, 0.15, -2.0])
def test_equals_plain_greedy(seed, tau):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(40, 120)), int(rng.integers(1, 6))
    V, T, labels, Z = clustered(n, 12, k, seed=seed, spread=1.5)
    budget = int(rng.integers(1, n))
    emb, sel = run_clipcov(V, T, labels, Z, budget, tau)
    a = sel.all_scores
    picks, gains = plain_greedy(V, T, labels, a, budget, tau)
    assert sel.indices.tolist() == picks.tolist()
    assert sel.score.tolist() == gains.tolist()  # bit-identical gains


def test_ties_and_singleton_classes():
    V, T, labels, Z = clustered(30, 8, 4, seed=3, spread=1.0)
    # exact duplicates (ties everywhere) and a class of size 1
    V = np.concatenate([V, V[:6], V[:6]]); T = np.concatenate([T, T[:6], T[:6]])
    labels = np.concatenate([labels, labels[:6], labels[:6]])
    labels[0] = labels.max() + 1  # row 0 alone in its class
    Z = np.concatenate([Z, Z[:1]])
    for tau in (0.0, -2.0):
        for budget in (1, 10, 41, len(V)):
            emb, sel = run_clipcov(V, T, labels, Z, budget, tau)
            picks, gains = plain_greedy(V, T, labels, sel.all_scores, budget, tau)
            assert sel.indices.tolist() == picks.tolist()
            assert sel.score.tolist() == gains.tolist()
    assert sorted(sel.indices.tolist()) == list(range(len(V)))


def test_lazy_gains_non_increasing_per_class_and_extension_keeps_prefix():
    V, T, labels, Z = clustered(300, 16, 1, seed=5, spread=1.0)
    a = np.random.default_rng(0).normal(size=300)
    idx = np.arange(300)
    g = ClassGreedy(V, T, a, idx, tau=0.0)
    g.extend(50)
    first = list(g.picks)
    g.extend(100)
    assert g.picks[:50] == first and len(g.picks) == 150
    assert all(x >= y for x, y in zip(g.gains, g.gains[1:]))  # submodular: gains only fall
    h = ClassGreedy(V, T, a, idx, tau=0.0)
    h.extend(150)
    assert h.picks == g.picks and h.gains == g.gains


def test_merge_extends_truncated_classes():
    V, T, labels, Z = clustered(200, 8, 2, seed=2, spread=1.0)
    a = np.random.default_rng(1).normal(size=200) + (labels == 0) * 5.0  # class 0 dominates
    sources = {}
    for k in (0, 1):
        rows = np.flatnonzero(labels == k)
        sources[k] = ClassGreedy(V[rows], T[rows], a[rows], rows, 0.0)
        sources[k].extend(1)  # deliberately tiny initial quota
    merged = merge_sequences(sources, 150)
    picks, gains = plain_greedy(V, T, labels, a, 150, 0.0)
    assert merged.index.tolist() == picks.tolist() and merged.gain.tolist() == gains.tolist()


def test_invalid_rows_never_selected_and_mean_mode_is_exact_without_threshold():
    V, T, labels, Z = clustered(80, 8, 3, seed=9, spread=1.0)
    valid = np.ones(80, bool)
    valid[::5] = False
    emb = embedding_set(V, T, labels, Z, valid=valid)
    sel = ClipCovSelector().select(emb, 64)
    assert valid[sel.indices].all() and len(set(sel.indices.tolist())) == 64
    exact = ClipCovSelector(tau=-2.0, r_mode="exact").select(emb, 30)
    mean = ClipCovSelector(tau=-2.0, r_mode="mean").select(emb, 30)
    np.testing.assert_allclose(exact.terms["r"], mean.terms["r"], atol=1e-6)


@pytest.mark.parametrize("seed,tau,spread,d", [(0, 0.0, 1.0, 16), (1, 0.15, 1.5, 16), (2, 0.0, 3.0, 8), (3, 0.3, 2.0, 32)])
def test_batched_exact_stage_equals_plain_greedy(seed, tau, spread, d):
    """Classes large enough that the kernel evaluates candidates in int8 batches against hundreds of
    members (and recomputes the pairs near or below tau exactly): still the plain greedy, bit for bit."""
    V, T, labels, Z = clustered(700, d, 2, seed=seed, spread=spread)
    emb, sel = run_clipcov(V, T, labels, Z, 500, tau)
    picks, gains = plain_greedy(V, T, labels, sel.all_scores, 500, tau)
    assert sel.indices.tolist() == picks.tolist()
    assert sel.score.tolist() == gains.tolist()


def test_kernel_uses_batches_and_recomputes_low_pairs():
    V, T, labels, Z = clustered(800, 8, 1, seed=7, spread=3.0)
    a = np.random.default_rng(0).normal(size=800) * 0.01
    g = ClassGreedy(V, T, a, np.arange(800), tau=0.0)
    g.extend(600)
    bounds, single, batches, batched, pairs, redone, ahead = g.stats.tolist()
    assert batches > 0 and batched >= batches and pairs > 0 and redone > 0


@pytest.mark.parametrize("seed,tau,spread", [(0, 0.0, 1.0), (1, 0.2, 2.0), (2, 0.0, 3.0)])
def test_look_ahead_batches_equal_plain_greedy(seed, tau, spread):
    """Batches topped up with candidates from deeper in the heap (the look-ahead, lowered to 32 old
    members here; the default needs 1024): which candidates are evaluated early never changes a pick."""
    n = 6000  # several times the look-ahead's pool, so that most of the heap stays out of it
    V, T, labels, Z = clustered(n, 8, 1, seed=seed, spread=spread)
    a = np.random.default_rng(seed).normal(size=n) * 0.05
    g = ClassGreedy(V, T, a, np.arange(n), tau=tau, lookahead_min=32)
    g.extend(600)
    g.extend(900)  # extended in place, as the merge does
    picks, gains = plain_greedy(V, T, labels, a, 1500, tau)
    assert g.picks == picks.tolist()
    assert g.gains == gains.tolist()
    assert kernel_state.stat(g.stats, "ahead") > 0  # the look-ahead added candidates


def test_look_ahead_with_many_fresh_entries_stays_in_bounds(tmp_path):
    """Thousands of near-duplicate rows with equal scores: one step evaluates thousands of candidates,
    so the look-ahead passes more fresh heap entries than its set-aside buffer holds. Compiled with
    numba's bounds checks (a fresh cache in tmp_path) and compared with the plain greedy."""
    import subprocess
    import sys

    code = """
import numpy as np
from clipcov_cli.select.clipcov.greedy import ClassGreedy, plain_greedy
NA, ND, d = 3000, 3000, 16
rng = np.random.default_rng(0)
A = np.zeros((NA, d)); A[:, 0] = 1; A[:, 1:] += 0.01 * rng.normal(size=(NA, d - 1))
D = np.zeros((ND, d)); D[:, 1:] = rng.normal(size=(ND, d - 1))
X = np.concatenate([A, D]); X /= np.linalg.norm(X, axis=1, keepdims=True)
V = X.astype(np.float16); T = V.copy(); m = NA + ND
a = np.concatenate([1.0 + 1e-7 * rng.random(NA), rng.uniform(0.3, 0.99, ND)])
g = ClassGreedy(V, T, a, np.arange(m), tau=0.3, lookahead_min=1024)
g.extend(1400)
p, gg = plain_greedy(V, T, np.zeros(m, np.int64), a, 1400, 0.3)
assert g.stats[6] > 0, g.stats
assert g.picks == p.tolist() and g.gains == gg.tolist()
print("ok")
"""
    env = dict(os.environ, NUMBA_BOUNDSCHECK="1", NUMBA_CACHE_DIR=str(tmp_path / "numba"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_exact_sums_do_not_depend_on_order():
    from clipcov_cli.select.clipcov.terms import exact_add

    rng = np.random.default_rng(3)
    V, T, _, _ = clustered(400, 32, 1, seed=3, spread=2.0)
    x = (V.astype(np.float64) @ T.astype(np.float64).T).ravel()  # exact products of float16 rows
    sums = []
    for _ in range(3):
        hi, lo = np.zeros(1), np.zeros(1)
        for v in rng.permutation(x):
            hi, lo = exact_add(hi, lo, np.array([v]))
        sums.append(float((hi + lo)[0]))
    from fractions import Fraction

    exact = sum(Fraction(float(v)) for v in x)
    assert sums[0] == sums[1] == sums[2] == float(exact)


def test_workers_and_grouping_do_not_change_the_result():
    V, T, labels, Z = clustered(600, 16, 5, seed=11, spread=1.2)
    emb = embedding_set(V, T, labels, Z)
    one = ClipCovSelector(workers=1).select(emb, 200)
    two = ClipCovSelector(workers=2).select(emb, 200)
    assert one.indices.tolist() == two.indices.tolist() and one.score.tolist() == two.score.tolist()
    for name in one.terms:
        assert np.array_equal(one.terms[name], two.terms[name], equal_nan=True)


def test_grouped_copy_and_sums():
    from clipcov_cli.select.clipcov.scan import group_from_arrays

    V, T, labels, Z = clustered(300, 8, 4, seed=2, spread=1.0)
    V = V.copy()
    V[5] = np.nan
    T[9] = 0
    g = group_from_arrays(V, T, labels, 4, workers=2)
    assert g.nan == 1 and g.zero == 1 and not g.valid[5] and not g.valid[9] and g.valid.sum() == 298
    for k in range(4):
        rows = g.order[g.starts[k]: g.starts[k + 1]]
        assert (labels[rows] == k).all() and (np.diff(rows) > 0).all()
        U, W = g.block(k)
        assert np.array_equal(U, V[rows].view(np.uint16)) and np.array_equal(W, T[rows].view(np.uint16))
    np.testing.assert_array_equal(g.sum_v, V[g.valid].astype(np.float64).sum(0))


@pytest.mark.parametrize("stateful", [True, False])
def test_merge_extensions_in_place_and_by_rerun_equal_plain_greedy(monkeypatch, stateful):
    """Tiny first quotas force the merge to extend classes: in place (large classes, local threads)
    or by re-running the unit with a larger quota; both give the plain greedy."""
    import clipcov_cli.select.methods.clipcov as mod

    monkeypatch.setattr(mod, "QUOTA_FACTOR", 0.05)
    monkeypatch.setattr(mod, "STATE_QUOTA_FACTOR", 0.05)
    monkeypatch.setattr(mod, "STATE_MIN_ROWS", 1 if stateful else 10**9)
    V, T, labels, Z = clustered(500, 12, 4, seed=13, spread=1.5)
    emb = embedding_set(V, T, labels, Z)
    sel = ClipCovSelector(tau=0.0, r_mode="exact", workers=2).select(emb, 300)
    picks, gains = plain_greedy(V, T, labels, sel.all_scores, 300, 0.0)
    assert sel.indices.tolist() == picks.tolist() and sel.score.tolist() == gains.tolist()


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_class_major_copy_file_equals_reading_the_parts(tmp_path, dtype):
    """The scan's class-major copy (a temporary file, for corpora larger than memory; its chunks read
    into reused buffers) and reading the parts directly (float16 parts: through their memory maps)
    give the same rows, sums and flags; float32 parts are rounded to float16."""
    from clipcov_cli.select.clipcov.parts import NpyPart
    from clipcov_cli.select.clipcov.scan import group_from_parts
    from clipcov_cli.select.clipcov.sources import ClassMajorFile, MappedParts
    from tests.select_helpers import write_embeddings_folder

    V, T, labels, Z = clustered(500, 8, 5, seed=4, spread=1.0)
    V = V.astype(dtype)
    V[17] = np.nan
    keys = np.array([f"{i:09d}" for i in range(500)])
    root = write_embeddings_folder(tmp_path / "e", V, T, keys, labels, np.zeros(500), parts=3)
    bounds = np.linspace(0, 500, 4).astype(int)
    parts = [(NpyPart.open(root / "img_emb" / f"img_emb_{p:05d}.npy"), NpyPart.open(root / "text_emb" / f"text_emb_{p:05d}.npy"),
              int(bounds[p])) for p in range(3)]
    direct = group_from_parts(parts, labels, 5, workers=2, copy=False)
    copied = group_from_parts(parts, labels, 5, workers=2, copy=True, tmpdir=str(tmp_path))
    try:
        assert (len(_mapped_parts(direct)) > 0) == (dtype == np.float16)
        assert isinstance(copied.source, ClassMajorFile) and isinstance(direct.source, MappedParts)
        assert direct.nan == copied.nan == 1 and np.array_equal(direct.valid, copied.valid)
        assert np.array_equal(direct.sum_v, copied.sum_v) and np.array_equal(direct.sum_t, copied.sum_t)
        for k in range(5):
            a, b = direct.block(k), copied.block(k)
            assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
            rows = direct.order[direct.starts[k]: direct.starts[k + 1]]
            assert np.array_equal(a[0], V[rows].astype(np.float16).view(np.uint16))
    finally:
        copied.cleanup()
        direct.close()
    assert not any(tmp_path.glob("clipcov-select-*"))


def _mapped_parts(grouped) -> list:
    return grouped.source.maps.mapped()


def test_parts_are_named_by_absolute_path(tmp_path, monkeypatch):
    """Units shipped to Ray workers name their parts absolutely (workers have their own folder)."""
    from clipcov_cli.select.clipcov.parts import NpyPart

    np.save(tmp_path / "x.npy", np.zeros((3, 4), np.float16))
    monkeypatch.chdir(tmp_path)
    part = NpyPart.open("x.npy")
    assert part.path == str(tmp_path / "x.npy") and part.rows == 3 and part.dim == 4


class _Revealed:
    """A class' sequence shown chunk by chunk, as the merge sees a greedy (``picks`` are positions)."""

    def __init__(self, gains, index) -> None:
        self._gains, self.index = list(gains), np.asarray(index)
        self.picks: list[int] = []
        self.gains: list[float] = []

    @property
    def exhausted(self) -> bool:
        return len(self.picks) >= len(self._gains)

    def extend(self, count: int) -> None:
        n = min(len(self._gains), len(self.picks) + count)
        self.picks, self.gains = list(range(n)), self._gains[:n]


def _sequences(seed: int, sorted_: bool = True) -> dict:
    """Classes of random sizes (some of one row), gains from a small set (ties within and across
    classes), example indices unique; each class in merge order unless ``sorted_`` is False."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(1, 40, size=rng.integers(1, 12))
    index = rng.permutation(int(sizes.sum()))
    out, start = {}, 0
    for k, m in enumerate(sizes):
        g = rng.integers(0, 6, size=m).astype(float) / 4
        idx = index[start: start + m]
        start += m
        order = np.lexsort((idx, -g)) if sorted_ else rng.permutation(m)
        out[k] = (g[order], idx[order])
    return out


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("first", [0, 1, 5])
def test_sorted_merge_equals_the_heap_merge(seed, first):
    from clipcov_cli.select.clipcov.greedy import _heap_merge

    seqs = _sequences(seed)
    total = sum(len(g) for g, _ in seqs.values())
    for budget in (1, total // 2, total, total + 3):
        runs = []
        for merge in (merge_sequences, lambda c, b, chunk_of: _heap_merge(c, b, chunk_of)):
            classes = {k: _Revealed(g, i) for k, (g, i) in seqs.items()}
            for c in classes.values():
                c.extend(first)
            runs.append(merge(classes, budget, chunk_of=lambda g: 2))
        a, b = runs
        assert len(a.index) == min(budget, total)
        for name in ("cls", "local", "index", "gain"):
            assert getattr(a, name).tolist() == getattr(b, name).tolist(), (seed, budget, name)


def test_merge_of_sequences_out_of_order_falls_back_to_the_heap(monkeypatch):
    from clipcov_cli.select.clipcov import greedy

    heap_merge, calls = greedy._heap_merge, []
    monkeypatch.setattr(greedy, "_heap_merge", lambda *a: calls.append(1) or heap_merge(*a))
    seqs = _sequences(3, sorted_=False)
    runs = []
    for merge in (merge_sequences, lambda c, b, chunk_of: heap_merge(c, b, chunk_of)):
        classes = {k: _Revealed(g, i) for k, (g, i) in seqs.items()}
        runs.append(merge(classes, 25, chunk_of=lambda g: 3))
    assert calls == [1]
    for name in ("cls", "local", "index", "gain"):
        assert getattr(runs[0], name).tolist() == getattr(runs[1], name).tolist()


def _copy_folder(tmp_path):
    from tests.select_helpers import write_embeddings_folder

    V, T, labels, _ = clustered(300, 8, 4, seed=6, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(300)])
    return write_embeddings_folder(tmp_path / "e", V.astype(np.float16), T.astype(np.float16), keys, labels,
                                   np.zeros(300), parts=3)


def test_the_copy_pass_starts_before_the_keys_are_read(tmp_path, monkeypatch):
    """The class-major copy needs the labels only: its pass runs while the keys are read and checked."""
    import tempfile

    from clipcov_cli.select import reader
    from clipcov_cli.select.clipcov import scan, sources

    root = _copy_folder(tmp_path)
    keep: list = []
    direct, _ = reader.open_embeddings(root, keep, prepare=ClipCovSelector(workers=2).prepare)
    for item in keep:
        item.cleanup()
    copies_seen = []
    real = reader.keys_to_numpy

    def spy(column):  # called once per part, when its keys are read
        copies_seen.append(len(list((tmp_path / "t").glob("clipcov-select-*/grouped.u16"))))
        return real(column)

    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    monkeypatch.setattr(scan, "GROUP_WHEN_OVER", 0.0)
    monkeypatch.setattr(reader, "keys_to_numpy", spy)
    keep = []
    copied, _ = reader.open_embeddings(root, keep, prepare=ClipCovSelector(workers=2).prepare)
    try:
        assert copies_seen == [1, 1, 1]
        g, h = copied.prepared, direct.prepared
        assert isinstance(g.source, sources.ClassMajorFile) and isinstance(h.source, sources.MappedParts)
        assert np.array_equal(copied.keys, direct.keys) and np.array_equal(g.order, h.order)
        for k in range(4):
            assert all(np.array_equal(a, b) for a, b in zip(g.block(k), h.block(k)))
    finally:
        for item in keep:
            item.cleanup()
        direct.prepared.close()  # the direct read's blocks mapped the parts again
    assert not list((tmp_path / "t").iterdir())


def test_a_key_mismatch_found_while_copying_removes_the_copy(tmp_path, monkeypatch):
    import tempfile

    import pyarrow.parquet as pq

    from clipcov_cli.errors import ClipcovError
    from clipcov_cli.select import reader
    from clipcov_cli.select.clipcov import scan

    root = _copy_folder(tmp_path)
    path = root / "metadata" / "metadata_00002.parquet"
    t = pq.read_table(path)
    pq.write_table(t.set_column(0, "key", [[f"x{i}" for i in range(t.num_rows)]]), path)
    (tmp_path / "t").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "t"))
    monkeypatch.setattr(scan, "GROUP_WHEN_OVER", 0.0)
    with pytest.raises(ClipcovError, match="labels/ rows do not match metadata/ keys"):
        reader.open_embeddings(root, [], prepare=ClipCovSelector(workers=2).prepare)
    assert not list((tmp_path / "t").iterdir())


def test_kernel_counters_are_read_by_name():
    """The named accessor reads the counter the kernel increments under that name (batches, not a
    neighbouring index), and a shorter vector (the selector's restart count) reads as 0."""
    V, T, labels, Z = clustered(800, 8, 1, seed=7, spread=3.0)
    a = np.random.default_rng(0).normal(size=800) * 0.01
    g = ClassGreedy(V, T, a, np.arange(800), tau=0.0)
    g.extend(600)
    named = {name: kernel_state.stat(g.stats, name) for name in kernel_state.STAT_NAMES}
    assert list(named.values()) == g.stats.tolist()
    assert named["batches"] > 0 and named["batched"] >= named["batches"]
    assert kernel_state.stat(np.array([3]), "batches") == 0
