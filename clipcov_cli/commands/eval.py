"""`clipcov eval`: evaluate checkpoints, write results.json, print one comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

import typer

from clipcov_cli.commands.options import TASKS, complete_device, parse_device
from clipcov_cli.utils.console import console, err_console

EPILOG = """\
Examples:\n\n
  clipcov eval runs/a/clipcov/checkpoints/epoch_30.pt --task zeroshot --data /data/imagenet/val\n\n
  clipcov eval runs/*/clipcov/checkpoints/epoch_10.pt --task retrieval --data test-pairs/ --out results/\n\n
  clipcov eval ckpt.pt --task zeroshot --data test/ --classes names.txt --templates templates.txt --model clipcov-tiny\n\n
  clipcov eval runs/a/clipcov/checkpoints/epoch_30.pt --suite datacomp --data /data/datacomp-eval   # needs clipcov[bench]
"""


def evaluate(
    checkpoints: List[Path] = typer.Argument(..., help="Checkpoint files (open_clip_train or open_clip state dicts)."),
    task: Literal[TASKS] = typer.Option("zeroshot", help="zeroshot or retrieval."),
    data: Path = typer.Option(..., help="Labelled WebDataset folder (.jpg + .cls/.txt) or class-subfolder image folder."),
    classes: Optional[Path] = typer.Option(None, help="Class names file [default: DATA/classnames.txt or folder names]."),
    templates: Optional[str] = typer.Option(None, help="Templates file with {c} [default: DATA/templates.txt, else openai]."),
    model: Optional[str] = typer.Option(None, help="Architecture [default: from the run's params.txt]."),
    model_config: Optional[Path] = typer.Option(None, help="Custom open_clip model config JSON."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for results.json."),
    batch_size: int = typer.Option(128, min=1, help="Images (and captions) per model batch."),
    device: str = typer.Option("auto", parser=parse_device, shell_complete=complete_device, metavar="<auto|cpu|cuda|cuda:N>", help="auto, cpu, cuda or cuda:N."),
    suite: Optional[Literal["datacomp", "paper"]] = typer.Option(None, help="A standard suite through clip_benchmark: datacomp or paper (--data: the folder of its wds_*_test sets)."),
) -> None:
    """Zero-shot accuracy or retrieval recall of one or more checkpoints."""
    if suite is not None:
        from clipcov_cli.evaluate.suite_command import run_suite_command

        return run_suite_command(suite, checkpoints, data, model, model_config, out, batch_size, device)
    from clipcov_cli.evaluate.results import comparison_table
    from clipcov_cli.evaluate.runner import EvalConfig, run_eval

    cfg = EvalConfig(checkpoints=tuple(checkpoints), data=data, task=task, classes=classes, templates=templates,
                     model=model, model_config=model_config, out=out, batch_size=batch_size, device=device)
    res = run_eval(cfg)
    console.print(comparison_table(list(res.rows)))
    err_console.print(f"wrote {res.path}")


def register(app: typer.Typer) -> None:
    app.command("eval", help="Evaluate checkpoints: zero-shot acc1/acc5/mean per-class recall or retrieval R@1/5/10.", epilog=EPILOG,
                short_help="Zero-shot / retrieval of checkpoints. e.g. clipcov eval ckpt.pt --data val/")(evaluate)
