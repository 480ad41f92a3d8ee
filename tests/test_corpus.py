"""The synthetic web-like corpus: determinism, noise fractions, splits, and the local server."""

from __future__ import annotations

import hashlib
import time
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from clipcov_cli.corpus import CorpusConfig, CorpusServer, generate_corpus, write_url_list
from clipcov_cli.corpus.noise import zipf_probs
from clipcov_cli.errors import ClipcovError

SMALL = CorpusConfig(n_web=400, n_proxy_per_class=4, n_test_per_class=3, shard_size=50)


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_identical_bytes_other_seed_differs(tmp_path):
    generate_corpus(tmp_path / "a", SMALL)
    generate_corpus(tmp_path / "b", SMALL)
    generate_corpus(tmp_path / "c", CorpusConfig(**{**SMALL.to_dict(), "seed": 1}))
    a, b, c = (tree_digest(tmp_path / x) for x in "abc")
    assert len(a) > 400 and a == b
    shared = a.keys() & c.keys()
    assert len(shared) > 300 and sum(a[k] != c[k] for k in shared) > 300


@pytest.mark.parametrize("fracs", [(0.35, 0.10, 0.05), (0.2, 0.25, 0.12)])
def test_noise_fractions_match_knobs(tmp_path, fracs):
    mis, dup, junk = fracs
    cfg = CorpusConfig(n_web=700, n_proxy_per_class=1, n_test_per_class=1, mismatch_frac=mis,
                       duplicate_frac=dup, junk_frac=junk)
    generate_corpus(tmp_path / "c", cfg)
    truth = pq.read_table(tmp_path / "c" / "truth.parquet").to_pandas()
    frac = truth["kind"].value_counts(normalize=True)
    assert abs(frac["mismatched"] - mis) <= 0.01
    assert abs(frac["duplicate"] - dup) <= 0.01
    assert abs(frac["junk"] - junk) <= 0.01
    # junk has no class; duplicates point at a group whose original is a clean sample of their class
    assert (truth.loc[truth.kind == "junk", "true_class"] == -1).all()
    dups = truth[truth.kind == "duplicate"]
    originals = truth.iloc[dups["dup_group"].to_numpy()]
    assert (originals["kind"].to_numpy() == "clean").all()
    assert (originals["true_class"].to_numpy() == dups["true_class"].to_numpy()).all()


def test_mismatched_captions_describe_another_class(tmp_path):
    layout = generate_corpus(tmp_path / "c", SMALL)
    truth = pq.read_table(layout.truth_path).to_pandas()
    caps = pq.read_table(layout.samples_path).to_pandas()
    names = layout.class_names
    from clipcov_cli.corpus.captions import SHAPE_SYNONYMS

    def shape_words(name):
        return SHAPE_SYNONYMS[name.split()[1]]

    both = truth.merge(caps, on="uid")
    clean = both[both.kind == "clean"]
    mis = both[both.kind == "mismatched"]
    assert all(any(w in c for w in shape_words(names[k])) for c, k in zip(clean.caption, clean.true_class))
    colour_or_shape_wrong = 0
    for c, k in zip(mis.caption, mis.true_class):
        colour, shape = names[k].split()
        from clipcov_cli.corpus.captions import COLOUR_SYNONYMS

        has_shape = any(w in c for w in SHAPE_SYNONYMS[shape])
        has_colour = any(w in c for w in COLOUR_SYNONYMS[colour])
        colour_or_shape_wrong += not (has_shape and has_colour)
    assert colour_or_shape_wrong == len(mis)


def test_zipf_class_frequencies(tmp_path):
    cfg = CorpusConfig(n_web=3000, n_proxy_per_class=1, n_test_per_class=1)
    generate_corpus(tmp_path / "c", cfg)
    truth = pq.read_table(tmp_path / "c" / "truth.parquet").to_pandas()
    counts = np.bincount(truth.loc[truth.true_class >= 0, "true_class"], minlength=cfg.n_classes)
    expected = zipf_probs(cfg.n_classes, 1.0) * counts.sum()
    assert counts[0] > 2.5 * counts[4] and counts[0] > 6 * counts[-1]
    assert np.abs(counts - expected).max() <= 0.25 * expected[0]


def test_splits_clean_balanced_and_disjoint(tmp_path):
    import webdataset as wds

    layout = generate_corpus(tmp_path / "c", SMALL)
    classes = [int(s["cls"]) for s in wds.WebDataset(sorted(map(str, layout.test_dir.glob("*.tar"))), shardshuffle=False)]
    assert np.bincount(classes).tolist() == [3] * SMALL.n_classes
    names = layout.classnames_path.read_text().splitlines()
    assert names == list(layout.class_names) and len(set(names)) == SMALL.n_classes >= 20
    assert all("{c}" in t for t in layout.templates_path.read_text().splitlines())
    assert len(list((layout.test_dir / "folder").rglob("*.jpg"))) == 3 * SMALL.n_classes
    import json

    proxy_uids = {json.loads(s["json"])["uid"] for s in wds.WebDataset(sorted(map(str, layout.proxy_dir.glob("*.tar"))), shardshuffle=False)}
    test_uids = {json.loads(s["json"])["uid"] for s in wds.WebDataset(sorted(map(str, layout.test_dir.glob("*.tar"))), shardshuffle=False)}
    web_uids = set(pq.read_table(layout.samples_path).column("uid").to_pylist())
    assert len(proxy_uids) == 4 * SMALL.n_classes
    assert not (proxy_uids & test_uids) and not (web_uids & (proxy_uids | test_uids))


def test_refuses_non_empty_folder_and_bad_knobs(tmp_path):
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("x")
    with pytest.raises(ClipcovError, match="not empty"):
        generate_corpus(tmp_path / "c", SMALL)
    with pytest.raises(ClipcovError):
        CorpusConfig(mismatch_frac=0.6, duplicate_frac=0.3, junk_frac=0.2)


def test_server_serves_404s_and_stalls(tmp_path):
    layout = generate_corpus(tmp_path / "c", SMALL)
    with CorpusServer(layout.web_dir, stall_seconds=0.6) as srv:
        write_url_list(layout, srv.base_url, tmp_path / "urls.parquet")
        urls = pq.read_table(tmp_path / "urls.parquet").to_pandas()
        body = urllib.request.urlopen(urls.url[0], timeout=5).read()
        assert body == (layout.web_dir / "images" / f"{urls.uid[0]}.jpg").read_bytes()
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(srv.base_url + "/images/missing.jpg", timeout=5)
        assert e.value.code == 404
        t0 = time.monotonic()
        urllib.request.urlopen(srv.base_url + "/stall/images/" + f"{urls.uid[0]}.jpg", timeout=5).read()
        assert time.monotonic() - t0 >= 0.6
        assert srv.base_url.startswith("http://127.0.0.1:")
    t0 = time.monotonic()
    with CorpusServer(tmp_path, stall_seconds=20) as srv:  # shutdown does not wait for a stalled request
        try:
            urllib.request.urlopen(srv.base_url + "/stall/x", timeout=0.3)
        except OSError:
            pass
    assert time.monotonic() - t0 < 5
