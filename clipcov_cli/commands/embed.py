"""`clipcov embed`: parse options, build an EmbedConfig, run, print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Optional

import typer

from clipcov_cli.commands.options import ENGINES, PRECISIONS, complete_device, parse_device
from clipcov_cli.utils.console import err_console

EPILOG = """\
Examples:\n\n
  clipcov embed cc3m/              # ViT-B-32/openai into cc3m/embeddings/\n\n
  clipcov embed cc3m/ --out emb/ --device cuda --precision amp --workers 8\n\n
  clipcov embed data/ --model ViT-B-16 --pretrained run/checkpoints/epoch_30.pt\n\n
  clipcov embed data/ --model-config my-arch.json --pretrained my-arch.pt\n\n
  clipcov embed data/ --model clipcov-tiny --pretrained tiny.pt --classes names.txt\n\n
  clipcov embed --relabel --classes names.txt data/embeddings/   # labels only\n\n
  clipcov embed --relabel --classes kmeans:100 data/embeddings/  # k-means pseudo-classes, no vocabulary\n\n
  clipcov embed /shared/cc12m/ --engine ray --ray-address auto --device cuda   # on a Ray cluster\n\n
Re-running the same command resumes at the first unfinished part; a finished folder is left alone.
"""


def _relabel_target(path: Path, out: Optional[Path]) -> Path:
    if out is not None:
        return out
    if (path / "clipcov.json").exists() or (path / "img_emb").is_dir():
        return path
    return path / "embeddings" if (path / "embeddings").is_dir() else path


def embed(
    path: Path = typer.Argument(..., metavar="DATASET_DIR", help="Dataset folder (WebDataset shards); with --relabel, the embeddings folder."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Embeddings folder [default: DATASET_DIR/embeddings]."),
    model: Optional[str] = typer.Option(None, help="open_clip architecture, or clipcov-tiny [default: ViT-B-32, or the folder's]."),
    pretrained: Optional[str] = typer.Option(None, help="open_clip pretrained tag or local checkpoint path [default: openai]."),
    model_config: Optional[Path] = typer.Option(None, "--model-config", help="A custom open_clip architecture (JSON); its file stem names it."),
    classes: Optional[str] = typer.Option(None, help="Class vocabulary: imagenet1k, a text file of names, one per line, or kmeans:K "
                                          "(K k-means clusters of the image embeddings; kmeans: K = n/1000 in [10, 1000]) [default: imagenet1k]."),
    templates: Optional[str] = typer.Option(None, help="Prompt templates: openai (80), or a text file of prompts with {c} (or {}) [default: openai]."),
    batch_size: int = typer.Option(256, "--batch-size", help="Samples per model batch."),
    workers: Optional[int] = typer.Option(None, help="Decode worker processes (0: decode in the main process) [default: min(4, CPUs)]."),
    device: str = typer.Option("auto", parser=parse_device, shell_complete=complete_device, metavar="<auto|cpu|cuda|cuda:N>", help="auto, cpu, cuda or cuda:N."),
    precision: Optional[Literal[PRECISIONS]] = typer.Option(None, help="fp32, fp16, bf16 or amp (autocast) [default: fp32]."),
    threads: int = typer.Option(0, help="torch threads for the model on CPU (0: the CPUs the decode workers leave free)."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Recompute an existing folder made with other settings."),
    relabel: bool = typer.Option(False, "--relabel", help="Only recompute labels/ for --classes/--templates from the stored embeddings."),
    engine: Literal[ENGINES] = typer.Option("local", help="local (decode workers + one model here) or ray (one Ray task per shard, same output)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: auto joins the running cluster [default: start a local Ray instance]."),
    num_gpus_per_worker: Optional[float] = typer.Option(None, "--num-gpus-per-worker", help="With --engine ray: GPUs per worker, fractions share a GPU [default: 1 on cuda, else 0]."),
    seed: Optional[int] = typer.Option(None, "--seed", help="With --classes kmeans: the k-means seed [default: 0, or the folder's]."),
) -> None:
    """Embed images and captions with a proxy CLIP and pseudo-label them (resumable)."""
    from clipcov_cli.embed import EmbedConfig, run_embed
    from clipcov_cli.embed.config import default_workers
    from clipcov_cli.embed.summary import summary_table

    target = _relabel_target(path, out) if relabel else (out or path / "embeddings")
    cfg = EmbedConfig(
        dataset_dir=None if relabel else path, out_dir=target, model=model, pretrained=pretrained,
        model_config=model_config, classes=classes, templates=templates, batch_size=batch_size,
        workers=default_workers() if workers is None else workers, device=device, precision=precision, threads=threads,
        overwrite=overwrite, relabel=relabel, engine=engine, ray_address=ray_address,
        num_gpus_per_worker=num_gpus_per_worker, seed=seed,
    )
    summary = run_embed(cfg, echo=lambda m: err_console.print(m, highlight=False))
    err_console.print(summary_table(summary))
    if summary.diagnostics is not None and summary.diagnostics.warning:
        err_console.print(summary.diagnostics.warning, highlight=False, markup=False)


def register(app: typer.Typer) -> None:
    app.command("embed", help="Embed a dataset folder with a proxy CLIP (open_clip) and pseudo-label it over a class vocabulary; "
                "writes clip-retrieval's layout plus labels/ and clipcov.json.", epilog=EPILOG,
                short_help="Shards -> CLIP embeddings + pseudo-labels. e.g. clipcov embed cc3m/")(embed)
