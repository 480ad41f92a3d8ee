"""results.json (one row per task, metric and checkpoint) and the comparison table."""

from __future__ import annotations

import json
from pathlib import Path

from rich.table import Table

from clipcov_cli.utils.atomic import write_json


def write_results(out: Path, rows: list[dict]) -> Path:
    """Rows: task, metric, value, model, checkpoint, data. Merged with rows already in the file
    (same task, metric and checkpoint are replaced), so several runs line up in one file."""
    path = out / "results.json"
    old = json.loads(path.read_text()) if path.exists() else []
    keep = {(r["task"], r["metric"], r["checkpoint"]) for r in rows}
    merged = [r for r in old if (r["task"], r["metric"], r["checkpoint"]) not in keep] + rows
    write_json(path, merged)
    return path


def label(checkpoint: str) -> str:
    """A short name: RUN/epoch_N for open_clip_train's RUN/clipcov/checkpoints/epoch_N.pt."""
    p = Path(checkpoint)
    if p.parent.name == "checkpoints" and len(p.parents) >= 3:
        return f"{p.parents[2].name}/{p.stem}"
    return p.name


def comparison_table(rows: list[dict]) -> Table:
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    t = Table(title="evaluation", header_style="bold")
    t.add_column("checkpoint", no_wrap=True)
    for m in metrics:
        t.add_column(m, justify="right")
    for ckpt in dict.fromkeys(r["checkpoint"] for r in rows):
        values = {r["metric"]: r["value"] for r in rows if r["checkpoint"] == ckpt}
        t.add_row(label(ckpt), *(f"{100 * values[m]:.2f}" if m in values else "-" for m in metrics))
    return t
