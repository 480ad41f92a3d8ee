"""`clipcov select`: parse options, build a SelectConfig, run, report (keys to stdout on request)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from clipcov_cli.commands.options import ENGINES, METHODS, R_MODES, renamed
from clipcov_cli.utils.console import err_console

EPILOG = """\
Examples:\n\n
  clipcov select cc3m/ --budget 10% --out subsets/clipcov-10\n\n
  clipcov select cc3m/embeddings --budget 300k --method clip-score --out subsets/clipscore-300k\n\n
  clipcov select cc3m/ --budget 1.5M --method semdedup --out subsets/semdedup\n\n
  clipcov select cc3m/ --budget 10% --dry-run                 # class histogram, nothing written\n\n
  clipcov select cc3m/ --budget 10% --out s/ --print-keys | wc -l\n\n
  clipcov select cc3m/ --budget 10% --out s/ --keep must-have.txt       # these keys in, ClipCov fills the rest\n\n
  clipcov select pool/ --budget 10% --out s/ --uids-out s/uids.npy       # DataComp's resharder reads uids.npy\n\n
  clipcov select cc3m/ --budget 10% --out s/ --engine ray --ray-address auto   # per-class work on a Ray cluster
"""


def select(
    ctx: typer.Context,
    input: Path = typer.Argument(Path("."), help="Embeddings folder, or a dataset folder with embeddings/."),
    budget: str = typer.Option(..., "--budget", "-b", help="A count (300k, 1.5M, 300000) or a fraction (10%)."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Subset folder to write (selection.parquet, manifest.json)."),
    method: Literal[METHODS] = typer.Option("clipcov", help="Selection method: ClipCov or a baseline."),
    seed: int = typer.Option(0, help="Seed (random, semdedup, negclip-loss)."),
    alpha: float = typer.Option(2.0, help="ClipCov: weight of image-caption alignment."),
    beta: float = typer.Option(0.5, help="ClipCov: weight of caption-label agreement."),
    gamma: float = typer.Option(1.0, help="ClipCov: weight of the center (genericity) penalty."),
    tau: float = typer.Option(0.0, help="ClipCov: similarity threshold (below -1: no thresholding)."),
    r_mode: Literal[R_MODES] = typer.Option("auto", help="ClipCov representativeness: exact (blocked), mean (identity), auto."),
    clusters: Optional[int] = typer.Option(None, help="semdedup: k-means clusters [default: n/1000]."),
    iterations: int = typer.Option(20, help="semdedup: k-means iterations."),
    batch_size: int = typer.Option(1024, "--batch-size", min=1, help="negclip-loss: batch size."),
    batch: Optional[int] = typer.Option(None, "--batch", hidden=True, help="Deprecated: --batch-size."),
    repeats: int = typer.Option(5, help="negclip-loss: shuffles averaged."),
    temperature: float = typer.Option(0.01, help="negclip-loss: temperature."),
    print_keys: bool = typer.Option(False, "--print-keys", help="Write the selected keys to stdout, one per line."),
    dry_run: bool = typer.Option(False, "--dry-run", help="Show the class histogram and the budget; write nothing."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out folder."),
    engine: Literal[ENGINES] = typer.Option("local", help="Where ClipCov's per-class work runs: local (threads) or ray (tasks)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address",
                                              help="Ray cluster to join ('auto': the running one) [default: start a local Ray instance]."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="Local threads for ClipCov's classes and the reading pass [default: the CPU count]."),
    workers: Optional[int] = typer.Option(None, "--workers", min=1, hidden=True, help="Deprecated: --threads."),
    keep: Optional[str] = typer.Option(None, "--keep", help="Keys that must be in the subset (a file, one key per line, or - for stdin); the method fills the rest of the budget."),
    uids_out: Optional[Path] = typer.Option(None, "--uids-out", help="Also write the selection as DataComp's uids.npy (sorted u8,u8; needs a uid column)."),
) -> None:
    """Select a subset at a budget with ClipCov (default) or a baseline."""
    from clipcov_cli.select.runner import SelectConfig, run_select

    batch_size = renamed(batch, "--batch", batch_size, "--batch-size")
    threads = renamed(workers, "--workers", threads, "--threads")
    params = _given(ctx, dict(seed=seed, alpha=alpha, beta=beta, gamma=gamma, tau=tau, r_mode=r_mode, clusters=clusters,
                              iterations=iterations, batch=batch_size, repeats=repeats, temperature=temperature))
    from clipcov_cli.select.methods import method_class
    from clipcov_cli.utils.keylist import describe, read_key_list

    method_class(method).check_options(params)  # another method's option is an error, not silently dropped

    kept = read_key_list(keep, what="--keep") if keep is not None else None
    cfg = SelectConfig(input=input, out=out, budget=budget, method=method, params=tuple(params.items()),
                       dry_run=dry_run, overwrite=overwrite, engine=engine, workers=threads, ray_address=ray_address,
                       keep=kept, keep_source=describe(keep) if keep is not None else "", uids_out=uids_out)
    with err_console.status(f"selecting with {method} ..."):
        result = run_select(cfg)
    err_console.print(result.table)
    if result.out is not None:
        err_console.print(f"wrote {result.out}/selection.parquet and manifest.json")
    if uids_out is not None and result.out is not None:
        err_console.print(f"wrote {uids_out} ({len(result.keys):,} DataComp uids, sorted)")
    if print_keys:
        _print_keys(result.keys)


# a method parameter -> the command's option(s) that set it (the rest: the parameter's own name)
_OPTIONS_OF = {"batch": ("batch_size", "batch")}


def _given(ctx: typer.Context, params: dict) -> dict:
    """The method parameters given on the command line (not left at their default): the method
    validates them, and takes its own defaults for the others."""
    def given(option: str) -> bool:  # by name: typer may bring its own copy of click's ParameterSource
        source = ctx.get_parameter_source(option)
        return source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")

    return {name: value for name, value in params.items() if any(given(o) for o in _OPTIONS_OF.get(name, (name,)))}


def _print_keys(keys: list[str]) -> None:
    """The keys on stdout; a reader that stops early (``| head -1000``) is not an error."""
    import os
    import sys

    try:
        sys.stdout.write("".join(k + "\n" for k in keys))
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so that the flush at exit does not fail again
        os.close(devnull)


def register(app: typer.Typer) -> None:
    app.command("select", help="Select the ClipCov subset at a budget (or a baseline's).", epilog=EPILOG,
                short_help="Choose a subset at a budget. e.g. clipcov select cc3m/ --budget 10% --out subset/")(select)
