"""`clipcov pretrain`: parse options, build a PretrainConfig, run open_clip_train, report."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from clipcov_cli.commands.options import RECIPES, complete_device, parse_device
from clipcov_cli.utils.console import err_console

EPILOG = """\
Examples:\n\n
  clipcov pretrain subsets/clipcov-10                  # -> subsets/clipcov-10/runs/tiny\n\n
  clipcov pretrain subsets/clipcov-10 --out runs/clipcov-10 --recipe paper\n\n
  clipcov select cc3m/ -b 10% -o s/ --print-keys | clipcov pretrain cc3m/ --keys -\n\n
  clipcov pretrain subsets/clipcov-10 --out runs/tiny --recipe tiny -- --epochs 5 --lr 5e-4\n\n
  clipcov pretrain /data/any-webdataset --out runs/full --keep-checkpoints last\n\n
Flags after `--` go to open_clip_train unchanged (they override the recipe). Without --out the run
folder is DATA/runs/RECIPE (DATA/runs/RECIPE-keys-HASH with --keys). Re-running the same
command resumes from the latest checkpoint. Multi-GPU: see docs/pretrain.md (torchrun).
"""


def pretrain(
    ctx: typer.Context,
    data: Path = typer.Argument(..., help="A subset folder (exported or not), or any WebDataset folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run folder (open_clip_train logs and checkpoints) [default: DATA/runs/RECIPE]."),
    recipe: Literal[RECIPES] = typer.Option("tiny", help="paper (RN50, 30 epochs, batch 512) or tiny (CPU, minutes)."),
    model_config: Optional[Path] = typer.Option(None, help="A custom open_clip model config JSON to train instead."),
    epochs: Optional[int] = typer.Option(None, min=1, help="Override the recipe's epochs."),
    batch_size: Optional[int] = typer.Option(None, min=1, help="Override the recipe's batch size."),
    workers: Optional[int] = typer.Option(None, min=1, help="Data loader workers (at most one per shard)."),
    seed: int = typer.Option(0, help="Random seed."),
    no_copy: bool = typer.Option(False, "--no-copy", help="A subset not exported: stream its selected samples from the source shards while training instead of writing a filtered copy into RUN/data."),
    device: str = typer.Option("auto", parser=parse_device, shell_complete=complete_device, metavar="<auto|cpu|cuda|cuda:N>", help="auto, cpu, cuda or cuda:N."),
    keys: Optional[str] = typer.Option(None, "--keys", help="Train on these keys of DATA only: a file with one key per line, or - for stdin."),
    keep_checkpoints: Literal["all", "last"] = typer.Option("all", help="all: a checkpoint per epoch (epoch_N.pt); last: each new one replaces the one before (disk for one)."),
) -> None:
    """Train a CLIP from scratch on a subset with open_clip_train."""
    from clipcov_cli.pretrain.config import PretrainConfig
    from clipcov_cli.pretrain.recipes import get_recipe
    from clipcov_cli.pretrain.inputs import default_run_dir
    from clipcov_cli.pretrain.runner import run_pretrain
    from clipcov_cli.utils.keylist import describe, read_key_list

    key_list = read_key_list(keys) if keys is not None else None
    recipe_ = get_recipe(recipe)
    if out is None:
        out = default_run_dir(data, recipe, key_list)
        err_console.print(f"run folder: {out} (pass --out to choose another)")
    cfg = PretrainConfig(data=data, out=out, recipe=recipe_, model_config=model_config, epochs=epochs,
                         batch_size=batch_size, workers=workers, seed=seed, device=device, extra_args=tuple(ctx.args),
                         keys=key_list, keys_source=describe(keys) if keys is not None else "", no_copy=no_copy,
                         keep_checkpoints=keep_checkpoints)
    res = run_pretrain(cfg, report=err_console.print)
    err_console.print(f"trained on {res.samples:,} samples ({res.source}); latest checkpoint: {res.checkpoint}")


def register(app: typer.Typer) -> None:
    app.command("pretrain", help="Train a CLIP from scratch on a subset (open_clip_train).", epilog=EPILOG,
                context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
                short_help="Train a CLIP on a subset. e.g. clipcov pretrain subset/")(pretrain)
