"""Order independence: the same rows presented in another order (across and within parts) give the
same selection — the same keys in the same rank order with the same scores — for every seeded method,
ClipCov and CLIP score; ties (duplicate rows, equal scores) break by key."""

from __future__ import annotations

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcov_cli.select.clipcov.greedy import plain_greedy
from clipcov_cli.select.methods import ClipCovSelector, make_selector
from clipcov_cli.select.methods.clipcov import start_grouping
from clipcov_cli.select.reader import open_embeddings
from clipcov_cli.select.runner import SelectConfig, run_select
from tests.select_helpers import clustered, embedding_set, write_embeddings_folder

N = 700


def _corpus(seed: int = 0):
    """Clustered rows with exact duplicates (ties in every score) and keys whose order is not the
    row order."""
    V, T, labels, Z = clustered(N - 60, 16, 5, seed=seed, spread=1.5)
    dup = np.arange(0, 120, 2)  # 60 rows repeated: same image, caption and label
    V, T, labels = np.concatenate([V, V[dup]]), np.concatenate([T, T[dup]]), np.concatenate([labels, labels[dup]])
    rng = np.random.default_rng(seed + 100)
    keys = np.array([f"{v:09d}" for v in rng.choice(10**9, size=N, replace=False)])
    label_sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels]).astype(np.float32)
    return V, T, labels, label_sim, keys, Z


def _folders(tmp_path, seed: int = 0):
    """The same rows written twice: in order, in 2 parts; shuffled across and within 3 parts."""
    V, T, labels, sims, keys, _ = _corpus(seed)
    a = write_embeddings_folder(tmp_path / "a", V, T, keys, labels, sims, parts=2)
    p = np.random.default_rng(seed + 7).permutation(N)
    b = write_embeddings_folder(tmp_path / "b", V[p], T[p], keys[p], labels[p], sims[p], parts=3)
    return a, b


METHODS = [("random", {"seed": 3}), ("negclip-loss", {"seed": 3, "batch": 64}), ("clip-score", {}),
           ("clipcov", {}), ("clipcov", {"r_mode": "mean"}), ("clipcov", {"tau": 0.1})]


def _table(folder, out, method, params):
    run_select(SelectConfig(input=folder, out=out, budget="37%", method=method, params=tuple(params.items())))
    return pq.read_table(out / "selection.parquet").to_pydict()


@pytest.mark.parametrize("method,params", METHODS, ids=lambda x: x if isinstance(x, str) else str(x))
def test_same_selection_whatever_the_row_order(tmp_path, method, params):
    a, b = _folders(tmp_path)
    ta = _table(a, tmp_path / "sa", method, params)
    tb = _table(b, tmp_path / "sb", method, params)
    assert len(ta["key"]) == round(0.37 * N)
    assert ta["key"] == tb["key"]  # same keys, same rank order
    for col in ta:  # every column: rank, gain / score, terms, class — bit for bit (NaN where undefined)
        x, y = np.asarray(ta[col]), np.asarray(tb[col])
        assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), col


@pytest.mark.parametrize("copy", [True, False])
def test_clipcov_class_major_copy_and_arrays_are_order_independent(tmp_path, copy):
    """The scan's class-major copy, the parts read in place and a caller's arrays: one selection."""
    a, b = _folders(tmp_path, seed=1)
    sels = []
    for folder in (a, b):
        keep: list = []
        emb, _ = open_embeddings(folder, keep, prepare=lambda parts: start_grouping(parts, 2, copy=copy))
        sel = ClipCovSelector(workers=2).select(emb, 250)
        sels.append((emb.keys[sel.indices].tolist(), sel.score.tolist()))
        for item in keep:
            item.cleanup()
    V, T, labels, sims, keys, Z = _corpus(1)
    p = np.random.default_rng(5).permutation(N)
    emb = embedding_set(V[p], T[p], labels[p], Z, keys=keys[p])
    sel = ClipCovSelector().select(emb, 250)
    sels.append((emb.keys[sel.indices].tolist(), sel.score.tolist()))
    assert sels[0] == sels[1] == sels[2]


def test_clipcov_ties_break_by_key_as_the_reference_does():
    """Keys in the reverse of the row order: among exact duplicates the lower key is picked first, and
    the selection equals the plain greedy whose ties go to the lower key."""
    V, T, labels, _, _, Z = _corpus(2)
    keys = np.array([f"k{N - i:05d}" for i in range(N)])  # key order reverses row order
    emb = embedding_set(V, T, labels, Z, keys=keys)
    for tau in (0.0, -2.0):
        sel = ClipCovSelector(tau=tau).select(emb, 300)
        picks, gains = plain_greedy(V, T, labels, sel.all_scores, 300, tau, rank=np.argsort(np.argsort(keys)))
        assert sel.indices.tolist() == picks.tolist() and sel.score.tolist() == gains.tolist()
        pos = {int(i): r for r, i in enumerate(sel.indices)}
        dup = np.arange(0, 120, 2)
        both = [(int(i), N - 60 + j) for j, i in enumerate(dup) if i in pos and N - 60 + j in pos]
        assert both and all(pos[copy_] < pos[orig] for orig, copy_ in both)  # the copy has the lower key


@pytest.mark.parametrize("method", ["random", "negclip-loss"])
def test_seeded_draws_go_by_key_not_position(method):
    """A seeded draw keeps a key whatever else is in the corpus: a row's draw is a function of the seed
    and its key only (random: the kept keys of a corpus and of that corpus with rows removed agree on
    the rows they share)."""
    V, T, labels, _, keys, Z = _corpus(3)
    full = embedding_set(V, T, labels, Z, keys=keys)
    sel = make_selector(method, seed=5, batch=64).select(full, 200)
    assert len(set(sel.indices.tolist())) == 200
    if method == "random":
        half = np.arange(0, N, 2)
        sub = embedding_set(V[half], T[half], labels[half], Z, keys=keys[half])
        kept_sub = set(keys[half][make_selector(method, seed=5).select(sub, 100).indices].tolist())
        kept_full = keys[sel.indices].tolist()
        # the 100 smallest draws of the half are the half's members in the full draw's order, first 100
        order_full = [k for k in keys[make_selector(method, seed=5).select(full, N).indices].tolist()
                      if k in set(keys[half].tolist())]
        assert kept_sub == set(order_full[:100])
        assert kept_full != keys[make_selector(method, seed=6).select(full, 200).indices].tolist()


def test_semdedup_selects_the_same_keys_whatever_the_row_order():
    """Its k-means trains on the rows in canonical key order (utils/kmeans.py): the same clusters."""
    V, T, labels, Z = clustered(900, 16, 6, seed=2)
    e = embedding_set(V, T, labels, Z)
    perm = np.random.default_rng(0).permutation(900)
    f = embedding_set(V[perm], T[perm], labels[perm], Z, keys=np.asarray(e.keys)[perm])
    sel = make_selector("semdedup", clusters=5)
    a = np.asarray(e.keys)[sel.select(e, 300).indices]
    b = np.asarray(f.keys)[sel.select(f, 300).indices]
    assert list(a) == list(b)
