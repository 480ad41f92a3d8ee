"""`clipcov compare` end to end on a tiny demo corpus (served, downloaded, embedded with the shipped
proxy): select -> export -> pretrain -> eval per method, budget and seed, paired intervals, resume."""

from __future__ import annotations

import json
import subprocess
import sys
import time

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


def _compare(cfg, layout, out, *extra):
    return subprocess.run([sys.executable, "-m", "clipcov_cli", "compare", str(cfg.dataset_dir), "--budget", "30%",
                           "--methods", "clipcov,random", "--seeds", "2", "--epochs", "1",
                           "--eval-data", str(layout.test_dir), "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=900)


def test_compare_end_to_end_and_resume(embedded, tmp_path):
    cfg, layout = embedded
    out = tmp_path / "cmp"
    r = _compare(cfg, layout, out)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "results.json").read_text())
    rows = {(row["method"], row["budget"]): row for row in res["rows"]}
    assert set(rows) == {(m, "30%") for m in ("clipcov", "random", "full (equal steps)")} | {("full", "100%")}
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
    assert rows[("clipcov", "30%")]["samples"] == 60
    assert rows[("full", "100%")]["samples"] == 200 and sum(rows[("full", "100%")]["classes"]) == 200
    assert sum(rows[("clipcov", "30%")]["classes"]) == 60
    # equal steps: the whole corpus trained for a 30% subset's steps reads as many samples per epoch
    done = json.loads((out / "runs" / "full-eqsteps-30pct-s0" / "done.json").read_text())
    assert done["extra_args"] == ["--batch-size", "60", "--train-num-samples", "60"]
    assert any(line.startswith("verdict at 30%: clipcov") for line in res["meta"]["notes"])
    assert "Δ vs random" in r.stdout
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 1 + 2 * 2 and "Class histograms" in html  # bars; corpus and subset per subset row
    # re-running resumes: nothing is trained or evaluated again, the same results
    log = (out / "compare.log").read_text()
    assert log.count("$ clipcov pretrain") == 2 * (2 + 1 + 1) and log.count("$ clipcov eval") == 2
    t0 = time.time()
    r2 = _compare(cfg, layout, out)
    assert r2.returncode == 0, r2.stderr[-3000:]
    assert json.loads((out / "results.json").read_text())["rows"] == res["rows"]
    assert (out / "compare.log").read_text() == log
    assert time.time() - t0 < 60


def test_compare_bad_input_is_one_line(embedded, tmp_path):
    cfg, layout = embedded
    r = _compare(cfg, layout, tmp_path / "c", "--methods", "clipcov,nosuch")
    assert r.returncode == 2 and "unknown method 'nosuch'" in r.stderr and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "clipcov_cli", "compare", str(tmp_path / "missing"), "--eval-data",
                        str(layout.test_dir), "--out", str(tmp_path / "c2")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "does not exist" in r.stderr and "Traceback" not in r.stderr
