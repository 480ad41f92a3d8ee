"""`clipcov compare`: parse options, build a CompareConfig, run the comparison, report."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

import typer
from rich.console import Console

from clipcov_cli.utils.console import console, err_console

EPILOG = """\
Examples:\n\n
  clipcov compare cc3m/ --budget 10% --budget 30% --eval-data imagenet-val/ --out cmp/\n\n
  clipcov compare cc3m/ --budget 10% --methods clipcov,random --seeds 3 --epochs 4 --eval-data val/ --out cmp/\n\n
Each method, budget and seed is selected, exported, trained and evaluated; re-running with the same
--out resumes (finished runs are skipped). DATASET needs its embeddings (clipcov embed DATASET).
"""


def compare(
    dataset: Path = typer.Argument(..., help="Dataset folder (WebDataset shards) with embeddings/ from clipcov embed."),
    budget: List[str] = typer.Option(["10%", "30%"], "--budget", "-b", help="A budget (10%, 300k); repeat for several."),
    methods: str = typer.Option("clipcov,clipcov-kmeans,random,clip-score,semdedup,negclip-loss", "--methods",
                                help="Comma-separated select methods to compare; clipcov-kmeans[:K] is ClipCov over K "
                                     "k-means pseudo-classes [K: the embeddings' class count]."),
    seeds: int = typer.Option(5, "--seeds", min=1, help="Training seeds 0..N-1 (seeded methods re-select per seed)."),
    eval_data: Path = typer.Option(..., "--eval-data", help="Labelled test split for clipcov eval (WebDataset or image folder)."),
    out: Path = typer.Option(..., "--out", "-o", help="Folder for subsets, runs, results.json and report.html."),
    embeddings: Optional[Path] = typer.Option(None, "--embeddings", help="Embeddings folder [default: DATASET/embeddings]."),
    epochs: int = typer.Option(8, min=1, help="Epochs per model (the whole corpus at equal steps too)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1),
    model: str = typer.Option("clipcov-tiny", help="Architecture trained on each subset."),
    recipe: str = typer.Option("tiny", help="Training recipe (lr, wd, warmup): tiny or paper."),
    workers: int = typer.Option(1, min=1, help="Data loader workers per training run."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    full: bool = typer.Option(True, "--full/--no-full", help="Also train on the whole corpus (equal epochs and equal steps)."),
) -> None:
    """Select with each method at each budget, train a CLIP on every subset for several seeds, and compare
    zero-shot top-1 with paired 95% intervals against random and CLIP score."""
    from clipcov_cli.compare.config import CompareConfig, builtin_variant
    from clipcov_cli.compare.runner import Extras, run_compare

    variants = tuple(builtin_variant(m.strip()) for m in methods.split(",") if m.strip())
    cfg = CompareConfig(dataset=dataset, embeddings=embeddings or dataset / "embeddings", eval_data=eval_data, out=out,
                        budgets=tuple(budget), variants=variants, seeds=tuple(range(seeds)), epochs=epochs,
                        batch_size=batch_size, workers=workers, model=model, recipe=recipe, full=full, device=device)

    def echo(message) -> None:
        if isinstance(message, str):
            err_console.print(f"[bold cyan]compare[/] {message}", highlight=False)
        else:  # the comparison table, wide enough for its interval columns even in a pipe
            Console(width=max(console.width, 160)).print(message)

    result = run_compare(cfg, echo, Extras(title=f"clipcov compare ({dataset})"))
    err_console.print(f"report: {result.report}\nresults: {result.results}\nwall time: {result.seconds:.0f}s")


def register(app: typer.Typer) -> None:
    app.command("compare", help="Compare selection methods end to end: select, train and evaluate per budget and seed.",
                epilog=EPILOG, short_help="Methods head to head with intervals. e.g. clipcov compare ds/ --eval-data val/ --out cmp/")(compare)
