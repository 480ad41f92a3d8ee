"""k-means pseudo-classes (``--classes kmeans``) and the label diagnostics: order independence,
streaming over parts, the default K, the diagnostics against brute force, the collapse warning,
semdedup's order independence through the same k-means module."""

from __future__ import annotations

import json
import math
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

sys.path.insert(0, str(Path(__file__).parent))
import select_helpers as sh  # noqa: E402

from clipcov_cli.embed.diagnostics import folder_diagnostics, label_diagnostics  # noqa: E402
from clipcov_cli.embed.kmeans_labels import default_k, kmeans_labels  # noqa: E402
from clipcov_cli.embed.vocab import load_vocabulary, parse_kmeans  # noqa: E402
from clipcov_cli.embed.writer import Layout  # noqa: E402
from clipcov_cli.errors import ClipcovError  # noqa: E402
from clipcov_cli.utils.kmeans import HashSample, canonical_order, key_hashes  # noqa: E402

N, D, K = 3000, 32, 8  # 256 K = 2048 < N: the centroids come from a streamed sample, not every row


@pytest.fixture(scope="module")
def corpus():
    V, T, _, _ = sh.clustered(N, D, 12, seed=3)
    keys = np.array([f"{(i * 7919) % 100003:09d}" for i in range(N)])
    return V, T, keys


def labelled(root: Path, V, T, keys, parts: int, k: int = K, seed: int = 0) -> tuple[dict, dict]:
    sh.write_embeddings_folder(root, V, T, keys, parts=parts)
    layout = Layout(root)
    names = [f"{p:05d}" for p in range(parts)]
    grouping = kmeans_labels(layout, names, k, seed, echo=lambda m: None)
    table = pq.read_table([str(layout.labels(p)) for p in names]).to_pydict()
    rows = {key: (table["pseudo_label"][i], table["top_sim"][i], table["label_sim"][i], table["margin"][i])
            for i, key in enumerate(table["key"])}
    return rows, grouping


def test_kmeans_labels_identical_for_the_same_rows_in_two_orders(corpus, tmp_path):
    V, T, keys = corpus
    a, ga = labelled(tmp_path / "a", V, T, keys, parts=3)
    perm = np.random.default_rng(1).permutation(N)
    b, gb = labelled(tmp_path / "b", V[perm], T[perm], keys[perm], parts=3)
    assert a == b  # labels, top_sim, label_sim and margin, bit for bit, row by row (by key)
    assert ga == gb and ga["k"] == K and ga["sample"] == 256 * K < N
    assert len({v[0] for v in a.values()}) == K
    other, _ = labelled(tmp_path / "c", V, T, keys, parts=3, seed=1)
    assert other != a  # the seed matters (another initialisation)


def test_streaming_over_parts_gives_the_labels_of_one_part(corpus, tmp_path):
    V, T, keys = corpus
    one, g1 = labelled(tmp_path / "one", V, T, keys, parts=1)
    many, g7 = labelled(tmp_path / "many", V, T, keys, parts=7)
    assert one == many and g1 == g7  # exact: the same sample, the same centroids, per-row assignment


def test_kmeans_labels_follow_their_formulas(corpus, tmp_path):
    V, T, keys = corpus
    root = tmp_path / "f"
    rows, grouping = labelled(root, V, T, keys, parts=2)
    C = np.load(root / "labels" / "centroids.npy")
    M = np.load(root / "labels" / "class_emb.npy")
    v, t = V.astype(np.float32), T.astype(np.float32)
    y = np.array([rows[k][0] for k in keys])
    sims = v @ C.T
    np.testing.assert_array_equal(y, sims.argmax(1))
    for X in (C, M):  # stored at float16 precision: what the exact assignment and agreement used
        np.testing.assert_array_equal(X.astype(np.float16).astype(np.float32), X)
    for c in range(K):  # the cluster's mean caption embedding, normalized (float16 rounding: 2^-11 relative)
        mean = t[y == c].astype(np.float64).sum(0)
        np.testing.assert_allclose(M[c], mean / np.linalg.norm(mean), rtol=2**-11, atol=2**-24)
    np.testing.assert_allclose([rows[k][2] for k in keys], np.einsum("ij,ij->i", t, M[y]), atol=1e-6)
    second = np.sort(sims, axis=1)[:, -2]
    np.testing.assert_allclose([rows[k][3] for k in keys], sims.max(1) - second, atol=1e-6)
    assert grouping["inertia"] == pytest.approx(float((1 - sims.max(1).astype(np.float64)).sum()), rel=1e-5)


def test_hash_sample_does_not_depend_on_how_rows_arrive():
    rng = np.random.default_rng(0)
    keys = np.array([f"k{i}" for i in range(500)])
    rows = rng.normal(size=(500, 4)).astype(np.float16)
    whole = HashSample(50, 4, seed=2)
    whole.add(keys, rows)
    perm = rng.permutation(500)
    pieces = HashSample(50, 4, seed=2)
    for chunk in np.array_split(perm, 9):
        pieces.add(keys[chunk], rows[chunk])
    assert list(whole.keys) == list(pieces.keys)
    np.testing.assert_array_equal(whole.training_rows(), pieces.training_rows())
    order = canonical_order(keys, 2)
    assert list(keys[order][:50]) == list(whole.keys)
    assert key_hashes(keys, 2).dtype == np.uint64 and (key_hashes(keys, 2) != key_hashes(keys, 3)).any()


M64 = 2**64


def _mix_ref(z: int) -> int:
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) % M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) % M64
    return z ^ (z >> 31)


def _fnv_ref(codes, h: int) -> int:
    for c in codes:
        h = ((h ^ c) * 0x100000001B3) % M64
    return h


def test_the_sample_hash_is_fnv1a_over_utf8_bytes_from_a_seeded_state():
    """The documented hash, one key at a time in Python integers: ASCII keys (hashed from their code
    points, no encoding), non-ASCII ones (their UTF-8 bytes) and empty ones."""
    keys = np.array(["000000017", "k5", "", "caf\u00e9", "\u65e5\u672c", "a" * 30])
    for seed in (0, 3, 2**63 + 1):
        want = [_mix_ref(_fnv_ref(k.encode("utf-8"), 0xCBF29CE484222325 ^ _mix_ref(seed % M64))) for k in keys]
        assert key_hashes(keys, seed).tolist() == want
        assert key_hashes(keys[:2], seed).tolist() == want[:2]  # ASCII only: the fast path, same values


def test_default_k_rule_and_parsing():
    assert [default_k(n) for n in (5, 800, 10_000, 123_456, 5_000_000)] == [5, 10, 10, 123, 1000]
    assert parse_kmeans("kmeans") == 0 and parse_kmeans("kmeans:24") == 24 and parse_kmeans("names.txt") is None
    with pytest.raises(ClipcovError, match="kmeans:100"):
        parse_kmeans("kmeans:x")
    a, b = load_vocabulary("kmeans:24", seed=0), load_vocabulary("kmeans:24", seed=1)
    assert a.is_kmeans and a.hash != b.hash and a.hash != load_vocabulary("kmeans", seed=0).hash


def test_kmeans_needs_at_least_k_rows(tmp_path):
    V, T, _, _ = sh.clustered(20, 8, 2)
    sh.write_embeddings_folder(tmp_path / "e", V, T, np.array([f"{i:03d}" for i in range(20)]), parts=1)
    with pytest.raises(ClipcovError, match="needs at least 50 rows"):
        kmeans_labels(Layout(tmp_path / "e"), ["00000"], 50, 0, echo=lambda m: None)
    assert not (tmp_path / "e" / "labels").exists()


# ---- diagnostics -------------------------------------------------------------------------------

def brute_force(labels: list[int], k: int) -> dict:
    counts = Counter(labels)
    n = len(labels)
    h = -sum((c / n) * math.log(c / n) for c in counts.values())
    biggest = max(range(k), key=lambda c: (counts.get(c, 0), -c))
    return {"used": len(counts), "largest_class": biggest, "largest_share": counts[biggest] / n,
            "entropy": h / math.log(k)}


def test_diagnostics_of_a_collapsed_labelling():
    # K = 10 classes: 70 rows in class 3, 20 in class 0, 10 in class 7 -> 3 of 10 used, 70% vs a fair 10%
    labels = [3] * 70 + [0] * 20 + [7] * 10
    top = np.linspace(0.1, 0.3, 100)
    margin = np.full(100, 0.02)
    d = label_diagnostics(np.array(labels), 10, top, margin)
    expected = brute_force(labels, 10)
    assert (d.rows, d.k, d.used, d.largest_class) == (100, 10, expected["used"], expected["largest_class"]) == (100, 10, 3, 3)
    assert d.largest_share == pytest.approx(0.7) and d.fair_share == pytest.approx(0.1)
    assert d.entropy == pytest.approx(expected["entropy"])
    assert d.entropy == pytest.approx(-(0.7 * math.log(0.7) + 0.2 * math.log(0.2) + 0.1 * math.log(0.1)) / math.log(10))
    assert d.mean_top_sim == pytest.approx(0.2) and d.mean_margin == pytest.approx(0.02)
    assert d.collapsed
    assert d.warning is not None and "\n" not in d.warning and "--classes kmeans" in d.warning
    assert "3 of 10 classes" in d.warning and "70.0%" in d.warning


def test_diagnostics_random_labellings_match_brute_force():
    rng = np.random.default_rng(5)
    for k in (1, 2, 7, 40):
        labels = rng.integers(0, k, size=int(rng.integers(1, 300))) ** 1
        d = label_diagnostics(labels, k)
        e = brute_force(labels.tolist(), k) if k > 1 else {"used": 1, "largest_class": 0, "largest_share": 1.0, "entropy": 1.0}
        assert (d.used, d.largest_class) == (e["used"], e["largest_class"])
        assert d.largest_share == pytest.approx(e["largest_share"]) and d.entropy == pytest.approx(e["entropy"])


def test_warning_fires_on_each_rule_and_not_on_balanced_labels():
    balanced = label_diagnostics(np.repeat(np.arange(10), 10), 10)
    assert not balanced.collapsed and balanced.warning is None and balanced.entropy == pytest.approx(1.0)
    # every class used, but the largest above 5x its fair share (60% > 5 x 10%)
    heavy = label_diagnostics(np.array([0] * 60 + list(range(10)) * 4), 10)
    assert heavy.used == 10 and heavy.collapsed
    # no class big, but fewer than half used (4 of 10)
    sparse = label_diagnostics(np.repeat(np.arange(4), 25), 10)
    assert sparse.largest_share == pytest.approx(0.25) and sparse.collapsed
    # exactly half used and exactly 5x the fair share: not (yet) collapsed
    edge = label_diagnostics(np.array([0] * 50 + [1, 2, 3, 4] * 12 + [1, 2]), 10)
    assert edge.used == 5 and edge.largest_share == pytest.approx(0.5) and not edge.collapsed


def test_folder_diagnostics_read_old_folders_without_margin(tmp_path):
    V, T, labels, Z = sh.clustered(60, 8, 3)
    sims = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    sh.write_embeddings_folder(tmp_path / "old", V, T, np.array([f"{i:03d}" for i in range(60)]), labels, sims)
    d = folder_diagnostics(tmp_path / "old", ["00000", "00001"], 3)
    assert d.mean_margin is None and d.mean_top_sim == pytest.approx(float(sims.mean()), abs=1e-6)
    assert d.used == len(set(labels.tolist()))
    assert all("margin" not in name for name, _ in d.rows_for_table())


def test_select_dry_run_and_manifest_report_the_diagnostics(cli, tmp_path):
    V, T, _, Z = sh.clustered(200, 8, 10)
    labels = np.where(np.arange(200) < 150, 0, np.arange(200) % 10)  # class 0 holds 75 %+
    sims = np.einsum("ij,ij->i", T.astype(np.float32), Z[labels])
    root = sh.write_embeddings_folder(tmp_path / "emb", V, T, np.array([f"{i:04d}" for i in range(200)]), labels, sims)
    for args in (["--dry-run"], ["--out", tmp_path / "sub"]):
        r = cli("select", root, "--budget", "20%", *args)
        assert r.returncode == 0, r.stderr
        assert "classes used" in r.stderr and "--classes kmeans" in r.stderr
    manifest = json.loads((tmp_path / "sub" / "manifest.json").read_text())
    assert manifest["labels"]["collapsed"] is True and manifest["labels"]["k"] == 10
    assert manifest["labels"]["largest_share"] == pytest.approx(155 / 200)


# ---- clipcov embed --classes kmeans, end to end with a real tiny open_clip model ----------------

def _labels_bytes(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted((out / "labels").iterdir())}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    import embed_helpers as h
    import torch

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("kmembed")
    h.make_dataset(root / "data", shards=3, per_shard=12)
    ckpt = h.tiny_checkpoint(root / "tiny.pt")
    classes, templates = h.vocab_files(root)
    args = ["embed", root / "data", "--model", "clipcov-tiny", "--pretrained", ckpt, "--batch-size", "5",
            "--workers", "0", "--device", "cpu", "--threads", "1"]
    return {"root": root, "args": args, "classes": classes, "templates": templates}


def test_embed_kmeans_end_to_end_resume_and_relabel(cli, tiny, tmp_path):
    out = tmp_path / "emb"
    r = cli(*tiny["args"], "--classes", "kmeans:3", "--out", out)
    assert r.returncode == 0, r.stderr
    assert "k-means: 3 clusters" in r.stderr and "classes used" in r.stderr
    m = json.loads((out / "clipcov.json").read_text())
    assert m["complete"] and not m["labels_pending"]
    g = m["grouping"]
    assert (g["kind"], g["k"], g["seed"], g["sample"]) == ("kmeans", 3, 0, 36) and g["inertia"] > 0
    assert m["classes"]["names"] == ["cluster 0", "cluster 1", "cluster 2"]
    first = _labels_bytes(out)
    C = np.load(out / "labels" / "centroids.npy")
    for part in m["parts"]:
        img = np.load(out / "img_emb" / f"img_emb_{part}.npy").astype(np.float32)
        lab = pq.read_table(out / "labels" / f"labels_{part}.parquet")
        np.testing.assert_array_equal(lab["pseudo_label"].to_numpy(), (img @ C.T).argmax(1))
    # the same command again: nothing to do
    r = cli(*tiny["args"], "--classes", "kmeans:3", "--out", out)
    assert r.returncode == 0 and "already complete" in r.stderr
    # killed while clustering (parts done, labels not): the re-run makes the same labels
    import shutil

    shutil.rmtree(out / "labels")
    (out / "clipcov.json").write_text(json.dumps({**m, "labels_pending": True, "complete": False}))
    assert cli(*tiny["args"], "--classes", "kmeans:3", "--out", out).returncode == 0
    assert _labels_bytes(out) == first
    # to a vocabulary and back to k-means with --relabel: the same k-means labels again
    assert cli("embed", "--relabel", "--classes", tiny["classes"], "--templates", tiny["templates"], out).returncode == 0
    assert json.loads((out / "clipcov.json").read_text())["grouping"] == {"kind": "vocabulary", "k": 8}
    assert cli("embed", "--relabel", "--classes", "kmeans:3", out).returncode == 0
    assert _labels_bytes(out) == first
    assert json.loads((out / "clipcov.json").read_text())["grouping"] == g


def test_embed_kmeans_default_k_and_bad_k(cli, tiny, tmp_path):
    out = tmp_path / "emb"
    assert cli(*tiny["args"], "--classes", "kmeans", "--seed", "3", "--out", out).returncode == 0
    g = json.loads((out / "clipcov.json").read_text())["grouping"]
    assert (g["k"], g["k_asked"], g["seed"]) == (10, "auto", 3)  # 36 rows: n/1000 clamped up to 10
    r = cli("embed", "--relabel", "--classes", "kmeans:99", out)
    assert r.returncode == 2
    assert "error: --classes kmeans:99 needs at least 99 rows" in r.stderr and "Traceback" not in r.stderr
