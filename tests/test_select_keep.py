"""`select --keep`: kept keys are in, the method fills the rest; ClipCov's greedy starts from them."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcov_cli.select.clipcov.terms import cross_similarity, exact_add, marginal_gain
from clipcov_cli.select.methods import ClipCovSelector, make_selector
from tests.select_helpers import clustered, embedding_set, write_embeddings_folder


def seeded_plain_greedy(V, T, labels, a, kept, budget, tau):
    """Reference: the plain greedy whose selected set starts as ``kept`` (every gain recomputed)."""
    n = len(a)
    sizes = np.bincount(labels)
    hi, lo = np.zeros(n), np.zeros(n)
    taken = np.zeros(n, bool)

    def add(j):
        taken[j] = True
        same = labels == labels[j]
        s = cross_similarity(V[same], T[same], V[j: j + 1], T[j: j + 1], tau)[:, 0]
        hi[same], lo[same] = exact_add(hi[same], lo[same], s)

    for j in kept:
        add(int(j))
    picks, gains = [], []
    for _ in range(budget - len(kept)):
        g = np.where(taken, -np.inf, marginal_gain(a, hi + lo, sizes[labels]))
        j = int(np.argmax(g))
        picks.append(j), gains.append(float(g[j]))
        add(j)
    return picks, gains


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("tau", [0.0, -2.0])
def test_clipcov_seeded_greedy_equals_the_reference(seed, tau):
    rng = np.random.default_rng(seed)
    V, T, labels, Z = clustered(150, 12, 4, seed=seed, spread=1.5)
    emb = embedding_set(V, T, labels, Z)
    kept = np.sort(rng.choice(150, size=12, replace=False))
    budget = 60
    sel = ClipCovSelector(tau=tau, r_mode="exact").select_keeping(emb, budget, kept)
    assert sorted(sel.indices[:12].tolist()) == kept.tolist()
    picks, gains = seeded_plain_greedy(V, T, labels, sel.all_scores, kept, budget, tau)
    assert sel.indices[12:].tolist() == picks
    assert sel.score[12:].tolist() == gains  # bit-identical gains after the kept rows
    # seeding changes the choice: the unseeded greedy's picks after the kept rows differ
    plain = ClipCovSelector(tau=tau, r_mode="exact").select(emb, budget - 12).indices.tolist()
    assert plain != picks


@pytest.mark.parametrize("method", ["random", "clip-score", "semdedup", "negclip-loss"])
def test_other_methods_fill_the_rest_among_the_other_rows(method):
    V, T, labels, Z = clustered(200, 12, 4, seed=1, spread=1.0)
    emb = embedding_set(V, T, labels, Z)
    kept = np.array([3, 50, 199])
    sel = make_selector(method, seed=0).select_keeping(emb, 40, kept)
    assert sel.indices[:3].tolist() == kept.tolist() and len(set(sel.indices.tolist())) == 40
    assert np.isnan(sel.score[:3]).all()
    # the rest is exactly the method's choice among the rows not kept
    hidden = emb.valid.copy()
    hidden[kept] = False
    from dataclasses import replace

    rest = make_selector(method, seed=0).select(replace(emb, valid=hidden), 37)
    assert sel.indices[3:].tolist() == np.asarray(rest.indices).tolist()


@pytest.fixture(scope="module")
def emb_dir(tmp_path_factory):
    V, T, labels, Z = clustered(300, 16, 5, seed=0, spread=1.0)
    keys = np.array([f"{i:09d}" for i in range(300)])
    sim = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    return write_embeddings_folder(tmp_path_factory.mktemp("k") / "embeddings", V, T, keys, labels, sim, parts=2)


@pytest.mark.parametrize("method", ["clipcov", "random"])
def test_cli_keep_from_file_and_stdin(cli, emb_dir, tmp_path, method):
    must = ["000000007", "000000150", "000000299"]
    (tmp_path / "must.txt").write_text("\n".join(must) + "\n")
    r = cli("select", emb_dir, "-b", "30", "--method", method, "--keep", tmp_path / "must.txt", "-o", tmp_path / "a",
                "--print-keys")
    assert r.returncode == 0, r.stderr
    keys = r.stdout.splitlines()
    assert len(keys) == 30 == len(set(keys)) and sorted(keys[:3]) == must
    m = json.loads((tmp_path / "a" / "manifest.json").read_text())
    assert m["keep"] == {"source": str((tmp_path / "must.txt").resolve()), "count": 3}
    r2 = cli("select", emb_dir, "-b", "30", "--method", method, "--keep", "-", "-o", tmp_path / "b", "--print-keys",
                 input="\n".join(reversed(must)) + "\n")
    assert r2.returncode == 0, r2.stderr
    assert r2.stdout == r.stdout  # the order of the kept keys in the file does not matter
    assert pq.read_table(tmp_path / "b" / "selection.parquet").column("key").to_pylist() == keys


def test_cli_keep_errors(cli, emb_dir, tmp_path):
    def inproc(*args):
        r = cli(*args)
        return r.returncode, r.stderr

    (tmp_path / "bad.txt").write_text("000000001\nnot-a-key\nalso-not\n")
    code, err = inproc("select", emb_dir, "-b", "30", "--keep", tmp_path / "bad.txt", "-o", tmp_path / "x")
    assert code == 2 and "2 --keep key(s) are not in the embeddings: not-a-key, also-not" in err
    assert "Traceback" not in err and not (tmp_path / "x").exists()
    (tmp_path / "many.txt").write_text("".join(f"{i:09d}\n" for i in range(40)))
    code, err = inproc("select", emb_dir, "-b", "30", "--keep", tmp_path / "many.txt", "-o", tmp_path / "x")
    assert code == 2 and "more than the budget" in err
    code, err = inproc("select", emb_dir, "-b", "30", "--keep", tmp_path / "none.txt", "-o", tmp_path / "x")
    assert code == 2 and "no such file" in err
