"""The demo's own stages (the corpus, its download, the proxy, the embedding); the comparison's
stages are `clipcov compare`'s (clipcov_cli.compare.stages). Each one writes its own folder and is
skipped when that folder is complete, so an interrupted demo resumes. Stages meet through files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipcov_cli.compare.stages import clipcov_cli, evaluate
from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.demo.proxy import PROXY_MODEL, expand_checkpoint, proxy_templates
from clipcov_cli.utils.atomic import write_text


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


def proxy(cfg: DemoConfig) -> Path:
    """The shipped proxy CLIP as a plain checkpoint under the demo folder, and its prompts file."""
    write_text(cfg.proxy_templates, "\n".join(proxy_templates()) + "\n")
    return expand_checkpoint(cfg.proxy_checkpoint)


def embed(cfg: DemoConfig, layout, proxy_ckpt: Path, log: Path) -> None:
    info = cfg.emb_dir / "clipcov.json"
    if info.exists() and json.loads(info.read_text()).get("complete"):
        return
    clipcov_cli("embed", cfg.dataset_dir, "--model", PROXY_MODEL, "--pretrained", proxy_ckpt, "--classes",
                layout.classnames_path, "--templates", cfg.proxy_templates, "--batch-size", 128,
                "--workers", cfg.workers, "--device", "cpu", log=log)


def label_accuracy(cfg: DemoConfig, layout) -> dict:
    """How right the proxy's pseudo-labels are on the web split (ground truth: truth.parquet), over
    the samples that show a class (junk images have none); classes used and the largest label's share."""
    meta = pd.concat([pq.read_table(p, columns=["key", "uid"]).to_pandas()
                      for p in sorted(cfg.dataset_dir.glob("[0-9]*.parquet"))])
    labels = pd.concat([pq.read_table(p, columns=["key", "pseudo_label"]).to_pandas()
                        for p in sorted((cfg.emb_dir / "labels").glob("labels_*.parquet"))])
    truth = pq.read_table(layout.truth_path, columns=["uid", "true_class"]).to_pandas()
    t = labels.merge(meta, on="key").merge(truth, on="uid")
    shown = t[t["true_class"] >= 0]
    counts = np.bincount(t["pseudo_label"].to_numpy(np.int64), minlength=len(layout.class_names))
    return {"accuracy": float(np.mean(shown["pseudo_label"].to_numpy() == shown["true_class"].to_numpy())),
            "samples": int(len(shown)), "classes_used": int(np.count_nonzero(counts)),
            "largest_label_share": float(counts.max() / max(len(t), 1))}


def proxy_top1(cfg: DemoConfig, layout, ckpt: Path, log: Path) -> float:
    """The proxy's zero-shot top-1 on the test split (the compared models' evaluation, with the
    proxy's prompts: those its pseudo-labels use)."""
    ccfg = cfg.compare_config(layout)
    return evaluate(ccfg, {"proxy": ckpt}, "zeroshot", log, out=cfg.out / "eval" / "proxy", model=PROXY_MODEL,
                    templates=cfg.proxy_templates)["proxy"]
