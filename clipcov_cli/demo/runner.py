"""`clipcov demo`: the whole loop on the embedded web-like corpus, and the paper-style comparison.

generate corpus -> serve on 127.0.0.1 -> download -> train the proxy CLIP on the clean proxy split ->
embed -> select at one budget with ClipCov and every baseline -> export -> pretrain a tiny CLIP from
scratch on each subset and on the full noisy corpus -> zero-shot and retrieval on the held-out split.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.demo import stages
from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.demo.report import Row, comparison_table, write_report, write_results


@dataclass(frozen=True)
class DemoResult:
    rows: list[Row]
    report: Path
    results: Path
    seconds: float


def run_demo(cfg: DemoConfig, echo: Callable[[str], None]) -> DemoResult:
    t0 = time.time()
    cfg.out.mkdir(parents=True, exist_ok=True)
    log = cfg.out / "demo.log"
    layout = stages.make_corpus(cfg)
    echo(f"corpus: {layout.n_web} web pairs, {layout.n_proxy} proxy, {layout.n_test} test, {len(layout.class_names)} classes")
    summary = stages.download(cfg, layout)
    echo(f"download: {summary.successes} of {summary.count} samples in {summary.shards_done} shards")
    proxy = stages.pretrain(cfg, layout.proxy_dir, "proxy", cfg.proxy_epochs, seed=0, log=log)
    echo(f"proxy CLIP trained on the clean proxy split: {proxy}")
    stages.embed(cfg, layout, proxy, log)
    echo(f"embedded {cfg.dataset_dir} with the proxy")
    ckpts: dict[str, Path] = {}
    subsets: dict[tuple[str, int], Path] = {}
    for seed in cfg.seeds:
        for method in cfg.methods:
            subset = stages.select(cfg, method, seed)
            subsets[(method, seed)] = subset
            shards = stages.export(subset)
            ckpts[f"{method}-s{seed}"] = stages.pretrain(cfg, shards, f"{method}-s{seed}", cfg.epochs, seed, log)
            echo(f"seed {seed}: {method} subset selected, exported and trained")
        ckpts[f"full-s{seed}"] = stages.pretrain(cfg, cfg.dataset_dir, f"full-s{seed}", cfg.epochs, seed, log)
        echo(f"seed {seed}: full noisy corpus trained")
    zs = stages.evaluate(cfg, layout, ckpts, "zeroshot", log)
    rt = stages.evaluate(cfg, layout, ckpts, "retrieval", log)
    bal = stages.evaluate(cfg, layout, ckpts, "zeroshot", log, metric="mean_per_class_recall")
    all_keys = stages.all_keys(cfg)
    rows = []
    for method in (*cfg.methods, "full"):
        names = [f"{method}-s{s}" for s in cfg.seeds]
        keys = all_keys if method == "full" else stages.subset_keys(subsets[(method, cfg.seeds[0])])
        rows.append(Row(method=method, budget="100%" if method == "full" else cfg.budget, samples=len(keys),
                        top1=[zs[n] for n in names if n in zs], recall1=[rt[n] for n in names if n in rt],
                        noise=stages.noise_fractions(cfg, layout, keys), balanced=[bal[n] for n in names if n in bal]))
    notes = _verdict(rows)
    title = f"clipcov demo ({'quick, ' if cfg.quick else ''}{len(cfg.seeds)} seed{'s' * (len(cfg.seeds) > 1)}, budget {cfg.budget})"
    kept, dropped = _examples(cfg, subsets[("clipcov", cfg.seeds[0])])
    corpus_cfg = json.loads(layout.corpus_json.read_text())["config"]
    seconds = time.time() - t0
    meta = {"title": title, "seeds": list(cfg.seeds), "budget": cfg.budget, "epochs": cfg.epochs,
            "proxy_epochs": cfg.proxy_epochs, "corpus": corpus_cfg, "wall_time_s": round(seconds, 1), "notes": notes}
    results = write_results(cfg.out, rows, meta)
    report = write_report(cfg.out, rows, title, kept, dropped, corpus_cfg, notes)
    echo_table = comparison_table(rows, title)
    echo(echo_table)  # type: ignore[arg-type]
    for n in notes:
        echo(n)
    return DemoResult(rows, report, results, seconds)


def _verdict(rows: list[Row]) -> list[str]:
    """Which method wins zero-shot top-1, by how much, and whether the gap exceeds the seed spread."""
    scored = [r for r in rows if r.top1]
    if not scored:
        return ["no evaluation results"]
    best = max(scored, key=lambda r: np.mean(r.top1))
    others = [r for r in scored if r is not best]
    if not others:
        return [f"{best.method}: {Row.fmt(best.top1)}"]
    second = max(others, key=lambda r: np.mean(r.top1))
    gap = 100 * (np.mean(best.top1) - np.mean(second.top1))
    spread = 100 * max(np.std(best.top1), np.std(second.top1))
    verdict = (f"best zero-shot top-1: {best.method} ({Row.fmt(best.top1)}%), next {second.method} "
               f"({Row.fmt(second.top1)}%): gap {gap:.1f} points")
    if len(best.top1) > 1:
        verdict += (f", {'larger' if gap > spread else 'not larger'} than the seed spread (std {spread:.1f})")
    else:
        verdict += " (one seed: no spread measured)"
    return [verdict]


def _examples(cfg: DemoConfig, subset: Path, n: int = 24):
    sel = pq.read_table(subset / "selection.parquet", columns=["key"]).column("key").to_pylist()
    kept = stages.sample_images(cfg, sel, n)
    chosen = set(sel)
    labels = pq.read_table(cfg.emb_dir / "metadata", columns=["key"]).column("key").to_pylist()
    rest = [k for k in labels if k not in chosen]
    rng = np.random.default_rng(0)
    dropped_keys = [rest[i] for i in sorted(rng.choice(len(rest), size=min(n, len(rest)), replace=False))]
    return kept, stages.sample_images(cfg, dropped_keys, n)
