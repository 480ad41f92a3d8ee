"""The selection summary: budget, class coverage, per-class kept counts, scores kept vs dropped."""

from __future__ import annotations

import numpy as np
from rich.table import Table

from clipcov_cli.select.base import EmbeddingSet, Selection


def class_histograms(emb: EmbeddingSet, sel: Selection | None) -> tuple[dict[int, int], dict[int, int]]:
    if emb.pseudo_label is None:
        return {}, {}
    labels = np.asarray(emb.pseudo_label)
    before = np.bincount(labels[emb.valid], minlength=1)
    hist_before = {int(k): int(v) for k, v in enumerate(before) if v}
    if sel is None:
        return hist_before, {}
    after = np.bincount(labels[sel.indices], minlength=len(before))
    return hist_before, {int(k): int(v) for k, v in enumerate(after) if v}


def _stats(x: np.ndarray) -> str:
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return "-"
    p10, p50, p90 = np.percentile(x, [10, 50, 90])
    return f"mean {x.mean():.4f}  p10 {p10:.4f}  p50 {p50:.4f}  p90 {p90:.4f}"


def _add_diagnostics(t: Table, diagnostics) -> None:
    """The label diagnostics' rows (``embed/diagnostics.py``)."""
    for name, value in diagnostics.rows_for_table() if diagnostics is not None else ():
        t.add_row(name, value)


def _with_warning(renderable, diagnostics):
    """The renderable, followed by the labels' one-line collapse warning when there is one."""
    if diagnostics is None or not diagnostics.warning:
        return renderable
    from rich.console import Group
    from rich.text import Text

    return Group(renderable, Text(diagnostics.warning, style="yellow"))


def summary_table(emb: EmbeddingSet, sel: Selection, method: str, budget_text: str, excluded: int,
                  diagnostics=None):
    t = Table(title=f"selection summary ({method})", show_header=True, header_style="bold")
    t.add_column("what")
    t.add_column("value")
    t.add_row("budget", f"{budget_text} -> {len(sel.indices):,} of {emb.n_valid:,} usable rows "
                        f"({100 * len(sel.indices) / max(emb.n_valid, 1):.1f}%)")
    if excluded:
        t.add_row("excluded rows", f"{excluded:,} (NaN, zero norm or not unit norm)")
    before, after = class_histograms(emb, sel)
    if before:
        kept = np.array([after.get(k, 0) for k in before])
        t.add_row("classes covered", f"{len(after):,} of {len(before):,}")
        t.add_row("kept per class", f"min {kept.min()}  median {int(np.median(kept))}  max {kept.max()}")
    if sel.all_scores is not None:
        mask = np.zeros(emb.n, bool)
        mask[sel.indices] = True
        scores = np.asarray(sel.all_scores, np.float64)
        t.add_row("score kept", _stats(scores[mask]))
        t.add_row("score dropped", _stats(scores[~mask & emb.valid]))
    _add_diagnostics(t, diagnostics)
    return _with_warning(t, diagnostics)


def dry_run_table(emb: EmbeddingSet, budget_text: str, budget: int, class_names, top: int = 15,
                  diagnostics=None):
    """The class histogram (a rich Table), followed by the label diagnostics when given (a Group)."""
    t = Table(title="dry run: nothing written", show_header=True, header_style="bold")
    t.add_column("class")
    t.add_column("rows", justify="right")
    t.add_column("share", justify="right")
    before, _ = class_histograms(emb, None)
    total = max(emb.n_valid, 1)
    for k, v in sorted(before.items(), key=lambda kv: (-kv[1], kv[0]))[:top]:
        name = class_names[k] if class_names and k < len(class_names) else str(k)
        t.add_row(name, f"{v:,}", f"{100 * v / total:.2f}%")
    if len(before) > top:
        t.add_row(f"... {len(before) - top} more classes", "", "")
    t.caption = (f"budget {budget_text} = {budget:,} of {emb.n_valid:,} usable rows ({100 * budget / total:.1f}%); "
                 f"{len(before)} classes")
    if diagnostics is None:
        return t
    from rich.console import Group

    labels = Table(title="labels", show_header=False, title_justify="left")
    _add_diagnostics(labels, diagnostics)
    return _with_warning(Group(t, labels), diagnostics)
