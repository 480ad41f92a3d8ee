"""`clipcov eval`: evaluate checkpoints, write results.json, print one comparison table."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer

from clipcov_cli.utils.console import console, err_console

EPILOG = """\
Examples:\n\n
  clipcov eval runs/a/clipcov/checkpoints/epoch_30.pt --task zeroshot --data /data/imagenet/val\n\n
  clipcov eval runs/*/clipcov/checkpoints/epoch_10.pt --task retrieval --data test-pairs/ --out results/\n\n
  clipcov eval ckpt.pt --task zeroshot --data test/ --classes names.txt --templates templates.txt --model clipcov-tiny\n\n
  clipcov eval runs/a/clipcov/checkpoints/epoch_30.pt --suite datacomp --data /data/datacomp-eval   # needs clipcov\\[bench]
"""


def evaluate(
    checkpoints: List[Path] = typer.Argument(..., help="Checkpoint files (open_clip_train or open_clip state dicts)."),
    task: str = typer.Option("zeroshot", help="zeroshot or retrieval."),
    data: Path = typer.Option(..., help="Labelled WebDataset folder (.jpg + .cls/.txt) or class-subfolder image folder."),
    classes: Optional[Path] = typer.Option(None, help="Class names file [default: DATA/classnames.txt or folder names]."),
    templates: Optional[str] = typer.Option(None, help="Templates file with {c} [default: DATA/templates.txt, else openai]."),
    model: Optional[str] = typer.Option(None, help="Architecture [default: from the run's params.txt]."),
    model_config: Optional[Path] = typer.Option(None, help="Custom open_clip model config JSON."),
    out: Path = typer.Option(Path("."), "--out", "-o", help="Folder for results.json."),
    batch_size: int = typer.Option(128, min=1),
    device: str = typer.Option("auto", help="auto, cpu or cuda."),
    suite: Optional[str] = typer.Option(None, help="A standard suite through clip_benchmark: datacomp or paper (--data: the folder of its wds_*_test sets)."),
) -> None:
    """Zero-shot accuracy or retrieval recall of one or more checkpoints."""
    if suite is not None:
        from clipcov_cli.evaluate.suite_command import run_suite_command

        return run_suite_command(suite, checkpoints, data, model, model_config, out, batch_size, device)
    from clipcov_cli.embed.model import ModelSpec, load_model
    from clipcov_cli.errors import ClipcovError
    from clipcov_cli.evaluate.data import load_eval_set, templates_for
    from clipcov_cli.evaluate.evaluator import model_name_for, retrieval, zeroshot
    from clipcov_cli.evaluate.results import comparison_table, write_results

    if task not in ("zeroshot", "retrieval"):
        raise ClipcovError(f"unknown --task {task!r}: use zeroshot or retrieval")
    for c in checkpoints:
        if not c.is_file():
            raise ClipcovError(f"checkpoint {c} does not exist")
    es = load_eval_set(data, classes)
    tmpl = templates_for(data, templates) if task == "zeroshot" else ()
    rows = []
    for ckpt in checkpoints:
        name = model_name_for(ckpt, model) if model_config is None else model_config.stem
        loaded = load_model(ModelSpec(model=name, pretrained=str(ckpt), model_config=model_config, device=device))
        metrics = zeroshot(loaded, es, tmpl, batch_size) if task == "zeroshot" else retrieval(loaded, es, batch_size)
        rows += [{"task": task, "metric": k, "value": v, "model": name, "checkpoint": str(ckpt.resolve()),
                  "data": str(data.resolve())} for k, v in metrics.items()]
    out.mkdir(parents=True, exist_ok=True)
    path = write_results(out, rows)
    console.print(comparison_table(rows))
    err_console.print(f"wrote {path}")


def register(app: typer.Typer) -> None:
    app.command("eval", help="Evaluate checkpoints: zero-shot top-1/top-5 or retrieval R@1/5/10.", epilog=EPILOG,
                short_help="Zero-shot / retrieval of checkpoints. e.g. clipcov eval ckpt.pt --data val/")(evaluate)
