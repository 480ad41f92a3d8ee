"""`clipcov export`: parse options, build an ExportConfig, run with progress, report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clipcov_cli.utils.console import err_console

EPILOG = """\
Examples:\n\n
  clipcov export subsets/clipcov-10                     # -> subsets/clipcov-10/shards/\n\n
  clipcov export subsets/clipcov-10 --workers 8 --shard-size 5000\n\n
  clipcov export subset/ --dataset /data/cc3m --out /data/cc3m-clipcov-10\n\n
Re-running resumes; the result is verified (count, keys, checksums) before manifest.json is written.
"""


def export(
    subset: Path = typer.Argument(..., help="Subset folder written by `clipcov select`."),
    dataset: Optional[Path] = typer.Option(None, help="Source dataset folder [default: the one in the manifest]."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder [default: SUBSET/shards]."),
    shard_size: int = typer.Option(10000, min=1, help="Samples per output shard."),
    workers: int = typer.Option(1, min=1, help="Parallel processes over source shards."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Record selected keys absent from the source instead of failing."),
) -> None:
    """Export the selected samples as new WebDataset shards (original bytes, verified)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from clipcov_cli.export import ExportConfig, run_export

    cfg = ExportConfig(subset_dir=subset, dataset_dir=dataset, out_dir=out, shard_size=shard_size, workers=workers,
                       allow_missing=allow_missing)
    with Progress(TextColumn("exporting"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as bar:
        task = bar.add_task("export", total=None)
        res = run_export(cfg, lambda done, total: bar.update(task, completed=done, total=total))
    if res.already_complete:
        err_console.print(f"{res.out_dir} is already complete ({res.samples:,} samples): nothing to do")
        return
    extra = f"; {len(res.missing)} missing keys recorded in the manifest" if res.missing else ""
    err_console.print(f"exported {res.samples:,} samples into {len(res.shards)} shards in {res.out_dir} "
                      f"({res.seconds:.1f}s), verified{extra}")


def register(app: typer.Typer) -> None:
    app.command("export", help="Export a selected subset as new WebDataset shards, verified.", epilog=EPILOG,
                short_help="Subset -> new WebDataset shards. e.g. clipcov export subset/")(export)
