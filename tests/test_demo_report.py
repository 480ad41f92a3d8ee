"""The comparison's consumers of eval results: clip_benchmark's metric names and the old ones both
read, and balanced accuracy (mean per-class recall) shown beside top-1 in the table and the report."""

from __future__ import annotations

from rich.console import Console

from clipcov_cli.compare.config import BALANCED
from clipcov_cli.compare.report import Row, comparison_table, write_report
from clipcov_cli.compare.stages import read_metric


def test_read_metric_prefers_new_names_and_reads_old_ones(tmp_path):
    a, b = str(tmp_path / "a.pt"), str(tmp_path / "b.pt")
    rows = [
        {"task": "zeroshot", "metric": "top1", "value": 0.1, "checkpoint": a},  # an old run's row
        {"task": "zeroshot", "metric": "acc1", "value": 0.4, "checkpoint": a},
        {"task": "zeroshot", "metric": "top1", "value": 0.3, "checkpoint": b},  # old file only
        {"task": "zeroshot", "metric": "mean_per_class_recall", "value": 0.25, "checkpoint": a},
    ]
    assert read_metric(rows, "zeroshot") == {a: 0.4, b: 0.3}
    assert read_metric(rows, "zeroshot", BALANCED) == {a: 0.25}


def test_table_and_report_show_balanced_accuracy_beside_top1(tmp_path):
    rows = [Row("clipcov", "30%", 300, [0], [0.5], [0.2], noise={"mismatched": 0.1}, balanced=[0.375])]
    console = Console(width=240, record=True)
    console.print(comparison_table(rows, "demo"))
    text = console.export_text()
    assert "bal. acc %" in text and "37.5" in text and text.index("top-1 %") < text.index("bal. acc %") < text.index("R@1 %")
    page = write_report(tmp_path, rows, "demo", [], [], {}).read_text()
    assert "mean per-class recall %" in page and "<td>37.5</td>" in page
