"""The end-of-run summary table (stderr)."""

from __future__ import annotations

from rich.table import Table


def summary_table(summary) -> Table:
    title = "embed: relabelled" if summary.relabelled else ("embed: already complete" if summary.already_complete else "embed")
    table = Table(title=title, show_header=False, title_justify="left")
    table.add_column(style="bold")
    table.add_column()
    table.add_row("embeddings", str(summary.out_dir))
    table.add_row("parts", f"{summary.parts} ({summary.parts_done_now} written now)")
    table.add_row("rows", f"{summary.rows:,}")
    skipped = ", ".join(f"{k}: {v}" for k, v in summary.skipped.items()) or "none"
    table.add_row("skipped", skipped + (f" (see {summary.out_dir / 'skipped.jsonl'})" if summary.skipped else ""))
    if summary.diagnostics is not None:
        for name, value in summary.diagnostics.rows_for_table():
            table.add_row(name, value)
    if summary.samples_read:
        table.add_row("speed", f"{summary.samples_per_s:,.1f} samples/s ({summary.seconds:.1f} s)")
    return table
