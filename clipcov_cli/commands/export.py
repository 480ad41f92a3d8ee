"""`clipcov export`: parse options, build an ExportConfig, run it with a progress bar, report."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from clipcov_cli.utils.console import console, err_console

EPILOG = """\
Examples:\n\n
  clipcov export subsets/clipcov-10                     # -> subsets/clipcov-10/shards/\n\n
  clipcov export subsets/clipcov-10 --workers 4 --shard-size 5000\n\n
  clipcov export subset/ --dataset /data/cc3m --out /data/cc3m-clipcov-10\n\n
  clipcov export subset/ --allow-missing                # record keys absent from the source\n\n
  clipcov select cc3m/ -b 10% -o s/ --print-keys | head -1000 | clipcov export --keys - --dataset cc3m/ --out first-1k/\n\n
  clipcov export --keys keys.txt --dataset cc3m/ --out mine/          # keys from any tool, one per line\n\n
  clipcov export --uids uids.npy --dataset pool/ --out subset-shards/  # DataComp's uids.npy (needs a uid column)\n\n
Interrupted? Run the same command again: finished units are kept and the result is byte-identical.
The result is verified (count, keys, member sizes, sha256) before shards/manifest.json is written.
Train on it: --train-data 'subsets/clipcov-10/shards/{00000..00004}.tar' (sizes.json gives the count).
"""


def export(
    subset: Optional[Path] = typer.Argument(None, help="Subset folder written by `clipcov select` (selection.parquet, manifest.json); or none with --keys / --uids."),
    dataset: Optional[Path] = typer.Option(None, "--dataset", "-d", help="Source dataset folder (img2dataset webdataset shards); default: the one in the subset's manifest."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Output folder; default: SUBSET/shards."),
    shard_size: int = typer.Option(10000, "--shard-size", min=1, help="Samples per output shard."),
    workers: int = typer.Option(1, "--workers", "-w", min=1, help="Processes; units are source shards, then output shards."),
    allow_missing: bool = typer.Option(False, "--allow-missing", help="Record selected keys absent from the source in the manifest instead of failing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an export of a different selection or shard size in --out."),
    keys: Optional[str] = typer.Option(None, "--keys", help="Export these keys instead of a subset: a file with one key per line, or - for stdin (needs --dataset and --out)."),
    uids: Optional[Path] = typer.Option(None, "--uids", help="Export the samples of a DataComp uids.npy (dtype u8,u8; needs --dataset with a uid column, and --out)."),
) -> None:
    """Export a selected subset as new WebDataset shards: original bytes, rank order, verified."""
    from clipcov_cli.export import ExportConfig, run_export

    key_list, source = _key_list(keys, uids, dataset, allow_missing)
    cfg = ExportConfig(subset_dir=subset, dataset_dir=dataset, out_dir=out, shard_size=shard_size, workers=workers,
                       allow_missing=allow_missing, overwrite=overwrite, keys=key_list, keys_source=source)
    with _progress() as update:
        res = run_export(cfg, update)
    if res.already_complete:
        err_console.print(f"{res.out_dir} is already complete ({res.samples:,} samples): nothing to do")
    else:
        extra = f"; {len(res.missing):,} missing keys recorded in the manifest" if res.missing else ""
        err_console.print(f"exported {res.samples:,} samples into {len(res.shards)} shards in {res.out_dir} "
                          f"in {res.seconds:.1f}s, verified{extra}")
    console.print(str(res.out_dir), highlight=False, soft_wrap=True)


def _key_list(keys: Optional[str], uids: Optional[Path], dataset: Optional[Path], allow_missing: bool):
    """(keys, where they came from) of --keys or --uids; (None, "") for a subset export."""
    from clipcov_cli.errors import ClipcovError
    from clipcov_cli.utils.keylist import describe, read_key_list

    if keys is not None and uids is not None:
        raise ClipcovError("give --keys or --uids, not both")
    if keys is not None:
        return read_key_list(keys), describe(keys)
    if uids is None:
        return None, ""
    from clipcov_cli.utils.uids import keys_for_uid_file

    found, missing = keys_for_uid_file(dataset, uids, allow_missing)
    if missing:
        err_console.print(f"{len(missing):,} uid(s) of {uids} are in no sample of {dataset}: skipped")
    return tuple(found), f"uids {uids.resolve()}"


def _progress():
    """A context manager yielding a (phase, done, total) callback for the job's progress on stderr
    (a rich bar on a terminal, periodic plain lines in a log file)."""
    from contextlib import contextmanager

    from clipcov_cli.utils.progress import job_progress

    @contextmanager
    def bar():
        with job_progress(None, "plan", unit="units") as p:
            yield lambda phase, done, total: p.update(done, total, label=phase)

    return bar()


def register(app: typer.Typer) -> None:
    app.command("export", help="Export a selected subset as new WebDataset shards: original bytes, rank order, verified.",
                epilog=EPILOG, short_help="Subset -> new WebDataset shards. e.g. clipcov export subset/")(export)
