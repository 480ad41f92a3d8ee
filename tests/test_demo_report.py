"""The demo's consumers of eval results: clip_benchmark's metric names and the old ones both read,
and balanced accuracy (mean per-class recall) shown beside top-1 in the table and the report."""

from __future__ import annotations

import json

from rich.console import Console

from clipcov_cli.demo import stages
from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.demo.report import Row, comparison_table, write_report


def results(tmp_path, rows):
    out = tmp_path / "eval" / "zeroshot"
    out.mkdir(parents=True)
    (out / "results.json").write_text(json.dumps(rows))


def test_evaluate_reads_new_and_old_metric_names(tmp_path):
    a, b = tmp_path / "a.pt", tmp_path / "b.pt"
    results(tmp_path, [
        {"task": "zeroshot", "metric": "top1", "value": 0.1, "checkpoint": str(a)},  # an old run's row
        {"task": "zeroshot", "metric": "acc1", "value": 0.4, "checkpoint": str(a)},
        {"task": "zeroshot", "metric": "top1", "value": 0.3, "checkpoint": str(b)},  # old file only
        {"task": "zeroshot", "metric": "mean_per_class_recall", "value": 0.25, "checkpoint": str(a)},
    ])
    cfg = DemoConfig.make(tmp_path, quick=True)
    assert stages.evaluate(cfg, None, {"a": a, "b": b}, "zeroshot", tmp_path / "log") == {"a": 0.4, "b": 0.3}
    bal = stages.evaluate(cfg, None, {"a": a, "b": b}, "zeroshot", tmp_path / "log", metric="mean_per_class_recall")
    assert bal == {"a": 0.25}


def test_table_and_report_show_balanced_accuracy_beside_top1(tmp_path):
    rows = [Row("clipcov", "30%", 300, [0.5], [0.2], {"mismatched": 0.1, "junk": 0.0, "duplicate": 0.0}, balanced=[0.375])]
    console = Console(width=200, record=True)
    console.print(comparison_table(rows, "demo"))
    text = console.export_text()
    assert "bal. acc %" in text and "37.5" in text and text.index("top-1 %") < text.index("bal. acc %") < text.index("R@1 %")
    page = write_report(tmp_path, rows, "demo", [], [], {}, []).read_text()
    assert "mean per-class recall %" in page and "<td>37.5</td>" in page
