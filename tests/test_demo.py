"""`clipcov demo --quick` end to end: the whole loop on the synthetic corpus, a resumed re-run, and a
second run from an empty folder with the same selections and metrics."""

from __future__ import annotations

import json
import time


def test_demo_quick_end_to_end_and_resume(cli, tmp_path):
    out = tmp_path / "demo"
    r = cli.subprocess("demo", "--quick", "--out", out, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    results = json.loads((out / "results.json").read_text())
    rows = {(row["method"], row["budget"]): row for row in results["rows"]}
    methods = ("clipcov", "random", "clip-score", "semdedup", "negclip-loss", "full (equal steps)")
    assert set(rows) == {(m, b) for m in methods for b in ("10%", "30%")} | {("full", "100%")}
    for row in rows.values():
        assert len(row["top1"]) == 1 and 0.0 <= row["top1"][0] <= 1.0
        assert len(row["recall1"]) == 1 and 0.0 <= row["recall1"][0] <= 1.0
        assert set(row["noise"]) == {"mismatched", "junk", "duplicate"}
    assert rows[("full", "100%")]["samples"] == 1000 and rows[("clipcov", "30%")]["samples"] == 300
    assert rows[("clipcov", "10%")]["samples"] == 100
    # one seed: paired differences without an interval
    assert rows[("clipcov", "30%")]["vs"]["random"]["ci95"] is None
    # the proxy ClipCov assumes: much stronger than the models trained on the subsets (the issue's
    # target in --quick: >= 80% of the web split's class images labelled right; measured 98.7%)
    meta = results["meta"]
    assert meta["proxy_label_accuracy"] >= 0.80, meta["proxy_labels"]
    assert meta["proxy_provenance"]["epochs"] == 20 and meta["proxy_provenance"]["per_class"] == 400
    assert meta["proxy_labels"]["classes_used"] == 24
    assert meta["proxy_top1"] > max(max(r["top1"]) for r in rows.values())
    # the full corpus carries the generator's noise; ClipCov prefers aligned pairs
    assert abs(rows[("full", "100%")]["noise"]["mismatched"] - 0.35) < 0.01
    assert rows[("clipcov", "30%")]["noise"]["mismatched"] < rows[("random", "30%")]["noise"]["mismatched"]
    assert "top-1 %" in r.stdout and "negclip-loss" in r.stdout  # the comparison table on stdout
    assert "pseudo-labels right for" in r.stderr and "verdict at 30%: clipcov" in r.stdout + r.stderr
    html = (out / "report.html").read_text()
    # the models train in the demo's process: their logs go to the demo log and to each run's own
    # out.log only (open_clip_train's handlers are removed after each run)
    assert "Train Epoch" not in r.stdout + r.stderr and "TorchDynamo" not in r.stderr and "Train Epoch" in (out / "demo.log").read_text()
    run_log = (out / "runs" / "clipcov-30pct-s0" / "clipcov" / "out.log").read_text()
    assert "Train Epoch" in run_log and "full-s0" not in run_log and "random-30pct" not in run_log
    # each model keeps its last checkpoint only, weights only (about 13 MB a model, not 40 MB an epoch)
    import torch

    runs = sorted(p for p in (out / "runs").iterdir() if p.is_dir())
    assert len(runs) == len(rows) and all(len(list(p.rglob("*.pt"))) == 1 for p in runs)
    assert set(torch.load(next(runs[0].rglob("*.pt")), weights_only=True)) == {"epoch", "name", "state_dict"}
    assert "<svg" in html and html.count("data:image/jpeg;base64,") >= 24 and "mismatch_frac" in html
    assert "Class histograms" in html and "proxy_label_accuracy" in html
    # re-running resumes: every stage is found complete
    t0 = time.time()
    r2 = cli.subprocess("demo", "--quick", "--out", out, timeout=600)
    assert r2.returncode == 0, r2.stderr[-3000:]
    again = json.loads((out / "results.json").read_text())
    assert again["rows"] == results["rows"]
    assert time.time() - t0 < 120
    # a second, independent run from an empty folder: the same selections, byte for byte, and the
    # same metrics (every row of results.json: top-1, R@1, noise shares, differences)
    other = tmp_path / "again"
    r3 = cli.subprocess("demo", "--quick", "--out", other, timeout=900)
    assert r3.returncode == 0, r3.stderr[-3000:]
    selections = sorted(p.relative_to(out) for p in (out / "subsets").glob("*/selection.parquet"))
    assert len(selections) == 10  # 5 methods x 2 budgets, one seed
    for rel in selections:
        assert (other / rel).read_bytes() == (out / rel).read_bytes(), rel
    assert json.loads((other / "results.json").read_text())["rows"] == results["rows"]


class _Layout:
    def __init__(self, root):
        self.test_dir, self.truth_path = root / "test", root / "truth.parquet"


def test_a_training_failure_is_one_line_with_the_log(tmp_path, monkeypatch):
    """open_clip_train runs in the demo's process: its exceptions become one JobFailed line (exit 1)
    naming the run and the log, with the traceback in the log."""
    import pytest

    from clipcov_cli.compare import stages
    from clipcov_cli.demo.config import DemoConfig
    from clipcov_cli.errors import JobFailed
    from clipcov_cli.pretrain import runner

    def broken(cfg):
        raise RuntimeError("DataLoader worker (pid 1) is killed by signal\nmore detail")

    monkeypatch.setattr(runner, "run_pretrain", broken)
    cfg = DemoConfig.make(tmp_path / "demo", quick=True).compare_config(_Layout(tmp_path))
    log = tmp_path / "demo" / "demo.log"
    with pytest.raises(JobFailed, match=r"pretrain proxy \(RuntimeError: DataLoader worker .*killed by signal\); see") as err:
        stages.pretrain(cfg, tmp_path / "data", "proxy", 1, 0, log)
    assert "\n" not in str(err.value) and err.value.exit_code == 1
    assert "Traceback" in log.read_text() and "clipcov pretrain" in log.read_text()
    assert "disk has only" not in str(err.value)  # this disk has room
    # torch.save on a full disk says "unexpected pos": the line adds the free space where it is low
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10 << 30, (10 << 30) - 300_000_000, 300_000_000))
    with pytest.raises(JobFailed, match=r"killed by signal\); its disk has only 300 MB free; see"):
        stages.pretrain(cfg, tmp_path / "data", "proxy2", 1, 0, log)
