"""Run img2dataset in-process on a validated URL list; resume, retry failures, check completeness."""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from clipcov_cli.download.config import DownloadConfig
from clipcov_cli.download.inputs import INPUT_DIR, UrlList, prepare, validate
from clipcov_cli.download.order import sort_shards
from clipcov_cli.download.summary import DownloadSummary, done_shards, summarize
from clipcov_cli.errors import ClipcovError, JobFailed, first_line
from clipcov_cli.utils.atomic import atomic_path

RETRIED_FILE = "retried_keys.parquet"


@contextlib.contextmanager
def _stdout_to(logf):
    """Send stdout (file descriptor 1, inherited by img2dataset's worker processes) to the log, so
    that clipcov's own stdout stays clean for pipelines; progress bars stay on stderr."""
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(logf.fileno(), 1)
    try:
        with contextlib.redirect_stdout(logf):
            yield
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


@contextlib.contextmanager
def _children_die_with_us(active: bool):
    """img2dataset's process pool and its logger are started with ``spawn``
    (``multiprocessing.util.spawnv_passfds``): each starts a watcher thread that ends it when this
    process is gone (its parent changes), so a SIGKILLed download leaves no orphan; multiprocessing's
    resource tracker then sees its pipe close, cleans up and exits by itself. (Not PR_SET_PDEATHSIG:
    it fires when the creating *thread* ends, and the pool's handler thread creates workers.)"""
    if not active:
        yield
        return
    from multiprocessing import util

    original = util.spawnv_passfds
    guard = ("import os as _o, threading as _t, time as _tm\n"
             f"def _clipcov_guard(p={os.getpid()}):\n"
             " while _o.getppid() == p:\n  _tm.sleep(0.5)\n _o._exit(1)\n"
             f"_o.getppid() == {os.getpid()} or _o._exit(1)\n"
             "_t.Thread(target=_clipcov_guard, daemon=True, name='clipcov-orphan-guard').start()\n")

    def spawn(path, args, passfds):
        args = list(args)
        if "-c" in args[:-1] and "resource_tracker" not in args[args.index("-c") + 1]:
            i = args.index("-c") + 1
            args[i] = guard + args[i]
        return original(path, args, passfds)

    util.spawnv_passfds = spawn
    try:
        yield
    finally:
        util.spawnv_passfds = original


def _engine(cfg: DownloadConfig):
    """Ray up for ``--engine ray`` (img2dataset's Ray distributor needs ``ray.init`` done by the caller)."""
    if cfg.engine != "ray":
        return contextlib.nullcontext()
    from clipcov_cli.distribute.ray_ import ray_session

    return ray_session(cfg.ray_address)


def _img2dataset(cfg: DownloadConfig, urls: UrlList, incremental_mode: str, log: Path) -> None:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import img2dataset

    # absolute paths: Ray workers (maybe on other nodes, over shared storage) do not share our cwd
    with _engine(cfg), open(log, "a") as logf, _stdout_to(logf), _children_die_with_us(cfg.engine == "local"):
        try:
            img2dataset.download(
                url_list=str(urls.path.resolve()), input_format="parquet", url_col=urls.url_col,
                caption_col=urls.caption_col, distributor="ray" if cfg.engine == "ray" else "multiprocessing",
                save_additional_columns=list(urls.extra_cols) or None, output_folder=str(cfg.out_dir.resolve()),
                output_format="webdataset", image_size=cfg.image_size, resize_mode=cfg.resize_mode,
                processes_count=cfg.processes, thread_count=cfg.threads, number_sample_per_shard=cfg.shard_size,
                retries=cfg.retries, timeout=cfg.timeout, incremental_mode=incremental_mode, enable_wandb=False,
                max_shard_retry=1, oom_shard_count=5,
            )
        except SystemExit as exc:  # img2dataset's SIGINT handler exits 0: that is an interruption
            raise KeyboardInterrupt from exc
        except Exception as exc:
            if cfg.engine == "ray" and type(exc).__module__.startswith("ray."):
                raise JobFailed(f"a download task failed on Ray after its retries ({type(exc).__name__}: "
                                f"{first_line(exc, 200)}); "
                                "finished shards are kept: re-run the same command to resume") from None
            raise


def _failed_rows(cfg: DownloadConfig, echo) -> pa.Table:
    """The last failed row of each URL to retry (see ``retry.py``); says what it skipped."""
    from clipcov_cli.download.retry import rows_to_retry

    cols = ["key", "url"] + (["caption"] if cfg.caption_col else []) + list(cfg.extra_cols)
    table, skipped = rows_to_retry(cfg.out_dir, done_shards(cfg.out_dir), cols, cfg.retry_all, cfg.max_attempts)
    if skipped["permanent"]:
        echo(f"skipping {skipped['permanent']:,} permanent failures (HTTP 4xx, not an image, ...): "
             "pass --retry-all to retry them too")
    if skipped["attempts"]:
        echo(f"skipping {skipped['attempts']:,} URLs that failed {cfg.max_attempts} times (--max-attempts)")
    return table


def _retried_keys(cfg: DownloadConfig) -> set[str]:
    path = cfg.out_dir / INPUT_DIR / RETRIED_FILE
    return set(pq.read_table(path)["key"].to_pylist()) if path.exists() else set()


def _prepare_retry(cfg: DownloadConfig, echo=print) -> UrlList | None:
    already = _retried_keys(cfg)
    failed = _failed_rows(cfg, echo)
    if failed.num_rows == 0:
        return None
    work = cfg.out_dir / INPUT_DIR
    n = len(list(work.glob("retry_*.parquet")))
    retry = failed.rename_columns([{"url": cfg.url_col, "caption": cfg.caption_col or "caption"}.get(c, c)
                                   for c in failed.column_names])
    path = work / f"retry_{n:03d}.parquet"
    with atomic_path(path) as tmp:
        pq.write_table(retry.drop(["key"]), tmp)
    keys = pa.table({"key": pa.array(sorted(already | set(failed["key"].to_pylist())), pa.string())})
    with atomic_path(work / RETRIED_FILE) as tmp:
        pq.write_table(keys, tmp)
    return UrlList(path, failed.num_rows, cfg.url_col, cfg.caption_col, cfg.extra_cols)


def _expected_shards(urls: UrlList, cfg: DownloadConfig) -> int:
    return -(-urls.rows // cfg.shard_size)


def run_download(cfg: DownloadConfig, echo=print) -> DownloadSummary:
    """Download ``cfg.url_list`` into ``cfg.out_dir`` as WebDataset shards; resumable.

    Raises ClipcovError for bad input (nothing written) and JobFailed when shards are missing after
    the run. ``echo`` receives one-line progress messages.
    """
    validate(cfg)
    created = not cfg.out_dir.exists()
    before = frozenset(done_shards(cfg.out_dir))
    try:
        urls = prepare(cfg)
    except ClipcovError:
        if created and cfg.out_dir.exists():
            shutil.rmtree(cfg.out_dir)
        raise
    log = cfg.out_dir / INPUT_DIR / "img2dataset.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    if cfg.retry_failed:
        if not before:
            raise ClipcovError(f"--retry-failed: {cfg.out_dir} has no completed shard to retry from")
        retry = _prepare_retry(cfg, echo)
        if retry is None:
            echo("no failed sample left to retry")
        else:
            echo(f"retrying {retry.rows:,} failed samples into new shards")
            _img2dataset(cfg, retry, "extend", log)
            sort_shards(cfg.out_dir, done_shards(cfg.out_dir))  # samples in key order, not completion order
    else:
        expected = _expected_shards(urls, cfg)
        already = len([s for s in before if s < expected])
        if already == expected:
            echo(f"all {expected} shards already done in {cfg.out_dir}: nothing to download")
        else:
            if already:
                echo(f"resuming: {already} of {expected} shards already done")
            _img2dataset(cfg, urls, "incremental", log)
        sort_shards(cfg.out_dir, done_shards(cfg.out_dir))  # samples in key order, not completion order
        missing = sorted(set(range(expected)) - set(done_shards(cfg.out_dir)))
        if missing:
            raise JobFailed(f"{len(missing)} of {expected} shards did not complete (first: {missing[0]:05d}); "
                            f"see {log} and re-run the same command to resume")
    shutil.rmtree(cfg.out_dir / "_tmp", ignore_errors=True)
    return summarize(cfg.out_dir, before, time.time() - t0, frozenset(_retried_keys(cfg)), urls.refused)
