"""`clipcov download`: parse options, build a DownloadConfig, run, print the summary."""

from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

import typer

from clipcov_cli.commands.options import ENGINES, INPUT_FORMATS, RESIZE_MODES
from clipcov_cli.utils.console import err_console
from clipcov_cli.utils.progress import job_phase

EPILOG = """\
Examples:\n\n
  clipcov download Train_GCC-training.tsv --recipe cc3m --out cc3m/\n\n
  clipcov download cc12m.tsv --recipe cc12m --out cc12m/ --processes 16 --threads 64\n\n
  clipcov download urls.parquet --url-col URL --caption-col TEXT --out data/ --image-size 224\n\n
  clipcov download urls.parquet --out data/ --retry-failed     # re-download only the failures\n\n
  clipcov download cc12m.tsv --recipe cc12m --out /shared/cc12m/ --engine ray --ray-address auto\n\n
Re-running the same command resumes: finished shards are skipped.
"""


def download(
    url_list: Path = typer.Argument(..., help="URL list: .tsv, .csv, .txt (optionally .gz) or .parquet."),
    out: Path = typer.Option(..., "--out", "-o", help="Output dataset folder (WebDataset shards)."),
    recipe: Optional[str] = typer.Option(None, help="Preset: cc3m, cc12m, or a recipe YAML file."),
    input_format: Optional[Literal[INPUT_FORMATS]] = typer.Option(None, help="URL list format [default: from the extension]."),
    url_col: Optional[str] = typer.Option(None, help="Column holding the image URL [default: url]."),
    caption_col: Optional[str] = typer.Option(None, help="Column holding the caption [default: caption]."),
    extra_col: Optional[List[str]] = typer.Option(None, "--extra-col", help="Extra column to keep (repeatable)."),
    image_size: Optional[int] = typer.Option(None, help="Resize target in pixels [default: 256]."),
    resize_mode: Optional[Literal[RESIZE_MODES]] = typer.Option(None, help="img2dataset's resize mode [default: border]."),
    processes: Optional[int] = typer.Option(None, help="Download processes [default: 1]."),
    threads: Optional[int] = typer.Option(None, help="Threads per process [default: 16]."),
    shard_size: Optional[int] = typer.Option(None, help="Samples per shard [default: 10000]."),
    retries: Optional[int] = typer.Option(None, help="Retries per URL [default: 0]."),
    timeout: Optional[int] = typer.Option(None, help="Seconds before a URL times out [default: 10]."),
    retry_failed: bool = typer.Option(False, "--retry-failed", help="Re-download only failed samples, into new shards (not permanent failures: 404, not an image)."),
    retry_all: bool = typer.Option(False, "--retry-all", help="With --retry-failed (implied): permanent failures too."),
    max_attempts: int = typer.Option(3, "--max-attempts", min=1, help="With --retry-failed: attempts per URL, the first included."),
    engine: Literal[ENGINES] = typer.Option("local", help="local (img2dataset's process pool) or ray (img2dataset's Ray distributor)."),
    ray_address: Optional[str] = typer.Option(None, "--ray-address", help="With --engine ray: auto joins the running cluster [default: start a local Ray instance]."),
    min_success: float = typer.Option(0.0, "--min-success", help="Fail (exit 1) when the share of samples downloaded is below this fraction; a download with no success always fails."),
    allow_file_urls: bool = typer.Option(False, "--allow-file-urls", help="Also fetch file:// URLs (local files); by default only http(s) lines are fetched, the others refused and counted."),
) -> None:
    """Download a URL+caption list into WebDataset shards (img2dataset), resumably."""
    from clipcov_cli.download import DownloadConfig, load_recipe, run_download, summary_table
    from clipcov_cli.download.summary import too_few_successes
    from clipcov_cli.errors import JobFailed

    settings = load_recipe(recipe) if recipe else {}
    cfg = DownloadConfig(url_list=url_list, out_dir=out, **settings).with_overrides(
        input_format=input_format, url_col=url_col, caption_col=caption_col,
        extra_cols=tuple(extra_col) if extra_col else None, image_size=image_size, resize_mode=resize_mode,
        processes=processes, threads=threads, shard_size=shard_size, retries=retries, timeout=timeout,
        retry_failed=retry_failed or retry_all or None, retry_all=retry_all or None, max_attempts=max_attempts, engine=engine, ray_address=ray_address,
        min_success=min_success, allow_file_urls=allow_file_urls or None,
    )
    with err_console.status(f"downloading {url_list.name} into {out} ..."):
        with job_phase(f"download: {url_list.name}"):  # in a log file: a line every CLIPCOV_PROGRESS_SECONDS
            summary = run_download(cfg, echo=lambda m: err_console.print(m, highlight=False))
    err_console.print(summary_table(summary))
    failure = too_few_successes(summary, cfg.min_success)
    if failure:
        raise JobFailed(failure)


def register(app: typer.Typer) -> None:
    app.command("download", help="Download a URL+caption list (tsv/csv/parquet) into WebDataset shards via img2dataset.",
                epilog=EPILOG, short_help="URL list -> WebDataset shards (img2dataset). e.g. clipcov download cc3m.tsv --recipe cc3m --out cc3m/")(download)
