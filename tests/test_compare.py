"""`clipcov compare` end to end on a tiny demo corpus (served, downloaded, embedded with the shipped
proxy): select -> export -> pretrain -> eval per method, budget and seed, paired intervals, resume."""

from __future__ import annotations

import json
import time

import pyarrow.parquet as pq
import pytest


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    from clipcov_cli.demo import stages
    from clipcov_cli.demo.config import DemoConfig

    cfg = DemoConfig(out=tmp_path_factory.mktemp("cmp") / "demo", n_web=200, n_test_per_class=2, seeds=(0, 1))
    layout = stages.make_corpus(cfg)
    stages.download(cfg, layout)
    stages.embed(cfg, layout, stages.proxy(cfg), cfg.out / "demo.log")
    return cfg, layout


def _compare(cli, cfg, layout, out, *extra, methods="clipcov,clipcov-kmeans,random"):
    return cli("compare", cfg.dataset_dir, "--budget", "30%", "--methods", methods, "--seeds", "2", "--epochs", "1",
               "--eval-data", layout.test_dir, "--out", out, *extra)


def _labels(folder):
    import pandas as pd

    t = pd.concat([pq.read_table(p, columns=["key", "pseudo_label"]).to_pandas() for p in sorted(folder.glob("labels_*.parquet"))])
    return dict(zip(t["key"], t["pseudo_label"]))


def test_compare_end_to_end_and_resume(cli, embedded, tmp_path):
    cfg, layout = embedded
    out = tmp_path / "cmp"
    r = _compare(cli, cfg, layout, out)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    rows = {(row["method"], row["budget"]): row for row in res["rows"]}
    methods = ("clipcov", "clipcov-kmeans", "random", "full (equal steps)")
    assert set(rows) == {(m, "30%") for m in methods} | {("full", "100%")}
    for (method, budget), row in rows.items():
        assert row["seeds"] == [0, 1] and len(row["top1"]) == 2 and all(0 <= v <= 1 for v in row["top1"])
        lo, hi = row["top1_ci95"]
        assert lo <= sum(row["top1"]) / 2 <= hi
        assert "clip-score" not in row["vs"]  # a baseline not compared is not paired with
        for base in ("random",):
            if base == method or budget == "100%":  # no pairing with itself; the full row has no 100% baseline
                assert base not in row["vs"]
                continue
            other = rows[(base, budget)]
            d = row["vs"][base]
            diffs = [a - b for a, b in zip(row["top1"], other["top1"])]
            assert d["mean"] == pytest.approx(sum(diffs) / 2) and d["n"] == 2
            assert d["ci95"][0] <= d["mean"] <= d["ci95"][1]
    assert rows[("clipcov", "30%")]["samples"] == rows[("clipcov-kmeans", "30%")]["samples"] == 60
    # clipcov-kmeans: ClipCov over `embed --relabel --classes kmeans:24` (K = the vocabulary's 24 classes)
    grouping = json.loads((out / "labels" / "kmeans-24" / "clipcov.json").read_text())["grouping"]
    assert grouping["kind"] == "kmeans" and grouping["k"] == 24 and grouping["seed"] == 0
    kmeans, vocab = _labels(out / "labels" / "kmeans-24" / "labels"), _labels(cfg.emb_dir / "labels")
    assert kmeans != vocab and len(kmeans) == len(vocab) == 200
    for name, labels in (("clipcov-kmeans", kmeans), ("clipcov", vocab)):  # each selected over its own classes
        sel = pq.read_table(out / "subsets" / f"{name}-30pct" / "selection.parquet").to_pandas()
        assert [labels[k] for k in sel["key"]] == sel["pseudo_label"].tolist()
    assert json.loads((cfg.emb_dir / "clipcov.json").read_text())["grouping"]["kind"] == "vocabulary"  # untouched
    assert rows[("full", "100%")]["samples"] == 200 and sum(rows[("full", "100%")]["classes"]) == 200
    assert sum(rows[("clipcov", "30%")]["classes"]) == 60
    # equal steps: the whole corpus trained for a 30% subset's steps reads as many samples per epoch
    done = json.loads((out / "runs" / "full-eqsteps-30pct-s0" / "done.json").read_text())
    assert done["extra_args"] == ["--batch-size", "60", "--train-num-samples", "60"]
    assert any(line.startswith("verdict at 30%: clipcov top-1") for line in res["meta"]["notes"])
    assert any(line.startswith("verdict at 30%: clipcov-kmeans top-1") for line in res["meta"]["notes"])
    assert "Δ vs random" in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 1 + 3 * 2 and "Class histograms" in html  # bars; corpus and subset per subset row
    # re-running resumes: nothing is clustered, trained or evaluated again, the same results
    log = (out / "compare.log").read_text()
    assert log.count("$ clipcov pretrain") == 2 * (3 + 1 + 1) and log.count("$ clipcov eval") == 2
    assert log.count("$ clipcov embed") == 1
    t0 = time.time()
    r2 = _compare(cli, cfg, layout, out)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["rows"] == res["rows"]
    assert (out / "compare.log").read_text() == log
    assert time.time() - t0 < 60


def test_compare_bad_input_is_one_line(cli, embedded, tmp_path):
    cfg, layout = embedded
    r = _compare(cli, cfg, layout, tmp_path / "c", methods="clipcov,nosuch")
    assert r.returncode == 2 and "unknown method 'nosuch'" in r.stderr and "Traceback" not in r.stderr
    r = _compare(cli, cfg, layout, tmp_path / "c", methods="clipcov,clipcov-kmeans:x")
    assert r.returncode == 2 and "K in clipcov-kmeans:K must be a positive integer" in r.stderr
    r = cli("compare", tmp_path / "missing", "--eval-data", layout.test_dir, "--out", tmp_path / "c2")
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "c").exists() and not (tmp_path / "c2").exists()


def test_kmeans_variant_names():
    from clipcov_cli.compare.config import builtin_variant

    assert builtin_variant("clipcov-kmeans") == builtin_variant("clipcov-kmeans")
    v = builtin_variant("clipcov-kmeans")
    assert (v.name, v.method, v.kmeans, v.labels, v.seeded) == ("clipcov-kmeans", "clipcov", 0, None, False)
    v = builtin_variant("clipcov-kmeans:7")
    assert (v.name, v.method, v.kmeans) == ("clipcov-kmeans-7", "clipcov", 7)  # no colon in folder names
    assert builtin_variant("random").kmeans is None
