"""The demo's stages. Each one writes its own folder and is skipped when that folder is complete,
so an interrupted demo resumes. Stages meet through files only."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.errors import ClipcovError, JobFailed, first_line

TINY = "clipcov-tiny"


def clipcov_cli(*args: str | Path, log: Path) -> None:
    """Run one clipcov command in its own process (embed and eval: one call each per demo)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ clipcov {' '.join(map(str, args))}\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "clipcov_cli", *map(str, args)], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise ClipcovError(f"demo stage failed: clipcov {' '.join(map(str, args[:2]))} (exit {r.returncode}); see {log}")


@contextmanager
def logged_to(log: Path, command: str) -> Iterator[None]:
    """Send what an in-process stage prints (and the log handlers it creates) to the demo log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {command}\n")
        f.flush()
        with redirect_stdout(f), redirect_stderr(f):
            yield


def make_corpus(cfg: DemoConfig):
    from clipcov_cli.corpus import CorpusConfig, generate_corpus, load_layout

    if (cfg.corpus_dir / "corpus.json").exists():
        return load_layout(cfg.corpus_dir)
    import shutil

    shutil.rmtree(cfg.corpus_dir, ignore_errors=True)  # a half-generated corpus from an interrupted run
    return generate_corpus(cfg.corpus_dir, CorpusConfig(seed=cfg.corpus_seed, n_web=cfg.n_web,
                                                        n_proxy_per_class=cfg.n_proxy_per_class,
                                                        n_test_per_class=cfg.n_test_per_class))


def download(cfg: DemoConfig, layout):
    """Serve the web split on 127.0.0.1 and download it with img2dataset (resumes by itself)."""
    from clipcov_cli.corpus import CorpusServer, write_url_list
    from clipcov_cli.download import DownloadConfig, run_download

    with CorpusServer(layout.web_dir) as srv:
        urls = write_url_list(layout, srv.base_url, cfg.out / "urls.parquet")
        return run_download(DownloadConfig(url_list=urls, out_dir=cfg.dataset_dir, extra_cols=("uid",),
                                           image_size=64, resize_mode="border", shard_size=1000, threads=16),
                            echo=lambda m: None)


def latest_checkpoint(run_dir: Path) -> Path | None:
    ckpts = sorted(run_dir.rglob("epoch_*.pt"), key=lambda p: int(p.stem.split("_")[1]))
    return ckpts[-1] if ckpts else None


def pretrain(cfg: DemoConfig, data: Path, name: str, epochs: int, seed: int, log: Path) -> Path:
    """Train (or finish training) one tiny CLIP, in this process: the demo trains 7 to 19 models and
    a fresh process would import torch and open_clip_train again for each."""
    from clipcov_cli.pretrain.config import PretrainConfig
    from clipcov_cli.pretrain.recipes import get_recipe
    from clipcov_cli.pretrain.runner import run_pretrain

    run = cfg.run_dir(name)
    ckpt = latest_checkpoint(run)
    if ckpt is not None and int(ckpt.stem.split("_")[1]) >= epochs:
        return ckpt
    pcfg = PretrainConfig(data=data, out=run, recipe=get_recipe("tiny"), epochs=epochs, batch_size=cfg.batch_size,
                          workers=cfg.workers, seed=seed, device="cpu")
    command = (f"clipcov pretrain {data} --out {run} --recipe tiny --epochs {epochs} --seed {seed} "
               f"--batch-size {cfg.batch_size} --workers {cfg.workers} --device cpu")
    with logged_to(log, command):
        try:
            run_pretrain(pcfg)
        except ClipcovError:
            raise
        except Exception as exc:  # open_clip_train's own failure: one line, the details in the log
            import traceback

            traceback.print_exc()  # into the demo log (stderr is redirected there)
            raise JobFailed(f"demo stage failed: pretrain {name} ({type(exc).__name__}: {first_line(exc, 200)}); "
                            f"see {log}") from None
    ckpt = latest_checkpoint(run)
    if ckpt is None:
        raise ClipcovError(f"pretrain wrote no checkpoint under {run}; see {log}")
    return ckpt


def embed(cfg: DemoConfig, layout, proxy_ckpt: Path, log: Path) -> None:
    info = cfg.emb_dir / "clipcov.json"
    if info.exists() and json.loads(info.read_text()).get("complete"):
        return
    clipcov_cli("embed", cfg.dataset_dir, "--model", TINY, "--pretrained", proxy_ckpt, "--classes",
                layout.classnames_path, "--templates", layout.templates_path, "--batch-size", 128,
                "--workers", cfg.workers, "--device", "cpu", log=log)


def select(cfg: DemoConfig, method: str, seed: int) -> Path:
    from clipcov_cli.select.runner import SelectConfig, run_select

    out = cfg.subset_dir(method, seed)
    if not (out / "manifest.json").exists():
        run_select(SelectConfig(input=cfg.emb_dir, out=out, budget=cfg.budget, method=method,
                                params=(("seed", seed),), overwrite=True))
    return out


def export(subset: Path) -> Path:
    from clipcov_cli.export import ExportConfig, run_export

    shards = subset / "shards"
    if not (shards / "manifest.json").exists():
        run_export(ExportConfig(subset_dir=subset))
    return shards


def noise_fractions(cfg: DemoConfig, layout, keys: list[str]) -> dict[str, float]:
    """Fractions of mismatched, junk and duplicate samples among ``keys`` (ground truth by uid)."""
    meta = pd.concat([pq.read_table(p, columns=["key", "uid"]).to_pandas()
                      for p in sorted(cfg.dataset_dir.glob("[0-9]*.parquet"))])
    truth = pq.read_table(layout.truth_path).to_pandas()
    kinds = meta.merge(truth, on="uid").set_index("key")["kind"]
    chosen = kinds.reindex(keys)
    return {k: float(np.mean(chosen == k)) for k in ("mismatched", "junk", "duplicate")}


def all_keys(cfg: DemoConfig) -> list[str]:
    return pq.read_table(cfg.emb_dir / "metadata").column("key").to_pylist() if (cfg.emb_dir / "metadata").is_dir() else []


def subset_keys(subset: Path) -> list[str]:
    return pq.read_table(subset / "selection.parquet", columns=["key"]).column("key").to_pylist()


# the first name found wins: clip_benchmark's names, then the ones results.json held before
HEADLINE = {"zeroshot": ("acc1", "top1"), "retrieval": ("image_to_text_R@1",)}


def evaluate(cfg: DemoConfig, layout, ckpts: dict[str, Path], task: str, log: Path,
             metric: str | None = None) -> dict[str, float]:
    """Run `clipcov eval` once for all checkpoints; return {run name: headline metric (or ``metric``)}."""
    out = cfg.out / "eval" / task
    results = out / "results.json"
    if not results.exists():
        clipcov_cli("eval", *ckpts.values(), "--task", task, "--data", layout.test_dir, "--model", TINY,
                    "--out", out, "--device", "cpu", log=log)
    rows = json.loads(results.read_text())
    rows = rows["results"] if isinstance(rows, dict) else rows
    names = (metric,) if metric else HEADLINE[task]
    by_ckpt: dict[str, float] = {}
    for name in reversed(names):
        for r in rows:
            if r.get("metric") == name:
                by_ckpt[str(Path(r["checkpoint"]).resolve())] = float(r["value"])
    return {name: by_ckpt[str(p.resolve())] for name, p in ckpts.items() if str(p.resolve()) in by_ckpt}


def sample_images(cfg: DemoConfig, keys: list[str], limit: int) -> list[tuple[bytes, str]]:
    """(jpeg bytes, caption) of up to ``limit`` of ``keys``, in the order given, from the dataset shards."""
    import webdataset as wds

    wanted = {k: i for i, k in enumerate(keys[:limit])}
    found: dict[str, tuple[bytes, str]] = {}
    for s in wds.WebDataset(sorted(map(str, cfg.dataset_dir.glob("*.tar"))), shardshuffle=False):
        if s["__key__"] in wanted:
            found[s["__key__"]] = (s["jpg"], s["txt"].decode())
            if len(found) == len(wanted):
                break
    return [found[k] for k in keys[:limit] if k in found]
