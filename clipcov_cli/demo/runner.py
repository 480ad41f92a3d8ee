"""`clipcov demo`: the whole loop on the embedded web-like corpus, and the paper-style comparison.

generate corpus -> serve on 127.0.0.1 -> download -> the shipped proxy CLIP -> embed -> then
`clipcov compare`'s loop: select at each budget with ClipCov and every baseline -> export -> pretrain
a tiny CLIP from scratch on each subset and on the whole corpus -> zero-shot and retrieval on the
held-out split -> paired intervals, table, results.json, report.html.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clipcov_cli.compare.report import Row
from clipcov_cli.compare.runner import Extras, run_compare
from clipcov_cli.demo import stages
from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.demo.proxy import PROXY_MODEL, provenance


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
    echo(f"corpus: {layout.n_web} web pairs, {layout.n_test} test, {len(layout.class_names)} classes")
    summary = stages.download(cfg, layout)
    echo(f"download: {summary.successes} of {summary.count} samples in {summary.shards_done} shards")
    proxy = stages.proxy(cfg)
    stages.embed(cfg, layout, proxy, log)
    echo(f"embedded {cfg.dataset_dir} with the shipped proxy CLIP ({PROXY_MODEL})")
    quality = stages.label_accuracy(cfg, layout)
    top1 = stages.proxy_top1(cfg, layout, proxy, log)
    line = (f"proxy: pseudo-labels right for {100 * quality['accuracy']:.1f}% of the web split's "
            f"{quality['samples']} class images ({quality['classes_used']} of {len(layout.class_names)} classes used, "
            f"largest label {100 * quality['largest_label_share']:.0f}%); zero-shot top-1 {100 * top1:.1f}% on the test split")
    echo(line)
    title = (f"clipcov demo ({'quick, ' if cfg.quick else ''}{len(cfg.seeds)} seed{'s' * (len(cfg.seeds) > 1)}, "
             f"budgets {', '.join(cfg.budgets)})")
    corpus_cfg = json.loads(layout.corpus_json.read_text())["config"]
    meta = {"proxy_label_accuracy": quality["accuracy"], "proxy_top1": top1, "proxy_labels": quality,
            "proxy_model": PROXY_MODEL, "proxy_provenance": provenance(), "corpus": corpus_cfg, "quick": cfg.quick}
    result = run_compare(cfg.compare_config(layout), echo, Extras(meta=meta, notes=(line,), title=title, log=log,
                                                                  started=t0))
    return DemoResult(result.rows, result.report, result.results, time.time() - t0)
