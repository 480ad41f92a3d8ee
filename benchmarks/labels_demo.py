"""Vocabulary labels vs k-means pseudo-classes on the demo corpus.

Builds the demo's corpus, downloads it, trains its proxy CLIP and embeds it with the vocabulary,
exactly as `clipcov demo` does (the same library functions, `clipcov_cli.demo.stages`), then
relabels a copy of the embeddings with `--classes kmeans:K` (K = the number of classes, 24) and
reports, for each grouping:

- label accuracy (vocabulary: the pseudo-label is the image's true class) and cluster purity (each
  cluster counted as its most frequent true class; for the vocabulary too), over the non-junk rows;
- the label diagnostics (`clipcov_cli/embed/diagnostics.py`);
- ClipCov's subset at the budget (30%): its mismatched / junk / duplicate shares, and the overlap
  of the two subsets.

    python benchmarks/labels_demo.py --out /tmp/labels-demo --quick     # the test-suite size
    python benchmarks/labels_demo.py --out /tmp/labels-demo             # the demo's size

Prints a table and writes OUT/labels_demo.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from clipcov_cli.demo import stages
from clipcov_cli.demo.config import DemoConfig
from clipcov_cli.embed import EmbedConfig, run_embed
from clipcov_cli.select.runner import SelectConfig, run_select


def truth_by_key(cfg: DemoConfig, layout, emb_dir: Path) -> pd.DataFrame:
    """key, pseudo_label, true_class, kind for every embedded row."""
    meta = pd.concat([pq.read_table(p, columns=["key", "uid"]).to_pandas()
                      for p in sorted(cfg.dataset_dir.glob("[0-9]*.parquet"))])
    truth = pq.read_table(layout.truth_path).to_pandas()
    labels = pq.read_table([str(p) for p in sorted((emb_dir / "labels").glob("labels_*.parquet"))],
                           columns=["key", "pseudo_label"]).to_pandas()
    return labels.merge(meta, on="key").merge(truth, on="uid")


def accuracy_and_purity(df: pd.DataFrame) -> tuple[float, float]:
    real = df[df["true_class"] >= 0]
    accuracy = float((real["pseudo_label"] == real["true_class"]).mean())
    purity = float(real.groupby("pseudo_label")["true_class"].agg(lambda s: s.value_counts().iloc[0]).sum() / len(real))
    return accuracy, purity


def clipcov_subset(emb_dir: Path, out: Path, budget: str) -> list[str]:
    run_select(SelectConfig(input=emb_dir, out=out, budget=budget, method="clipcov", overwrite=True))
    return pq.read_table(out / "selection.parquet", columns=["key"]).column("key").to_pylist()


def measure(cfg: DemoConfig, layout, emb_dir: Path, name: str) -> dict:
    from clipcov_cli.embed.runner import diagnose

    df = truth_by_key(cfg, layout, emb_dir)
    accuracy, purity = accuracy_and_purity(df)
    keys = clipcov_subset(emb_dir, cfg.out / "subsets" / f"clipcov-{name}", cfg.budget)
    diag = diagnose(emb_dir)
    return {"grouping": name, "accuracy": accuracy, "purity": purity, "diagnostics": diag.as_dict(),
            "warning": diag.warning, "subset": keys, "noise": stages.noise_fractions(cfg, layout, keys)}


def build(cfg: DemoConfig, echo) -> object:
    layout = stages.make_corpus(cfg)
    stages.download(cfg, layout)
    proxy = stages.pretrain(cfg, layout.proxy_dir, "proxy", cfg.proxy_epochs, seed=0, log=cfg.out / "demo.log")
    stages.embed(cfg, layout, proxy, cfg.out / "demo.log")
    echo(f"corpus {layout.n_web} web pairs, {len(layout.class_names)} classes; proxy {proxy}")
    return layout


def kmeans_copy(cfg: DemoConfig, k: int) -> Path:
    out = cfg.out / "embeddings-kmeans"
    if not (out / "clipcov.json").exists() or json.loads((out / "clipcov.json").read_text()).get("grouping", {}).get("k") != k:
        shutil.rmtree(out, ignore_errors=True)
        shutil.copytree(cfg.emb_dir, out)
        run_embed(EmbedConfig(dataset_dir=None, out_dir=out, classes=f"kmeans:{k}", relabel=True, device="cpu"))
    return out


def true_classes(cfg: DemoConfig, layout) -> dict:
    """The diagnostics of the ground-truth classes (non-junk rows): what a perfect labelling looks like."""
    from clipcov_cli.embed.diagnostics import label_diagnostics

    df = truth_by_key(cfg, layout, cfg.emb_dir)
    real = df[df["true_class"] >= 0]
    return label_diagnostics(real["true_class"].to_numpy(), len(layout.class_names)).as_dict()


def report(rows: list[dict], pool: dict, truth: dict) -> str:
    a, b = (set(r["subset"]) for r in rows)
    lines = [f"pool: mismatched {100 * pool['mismatched']:.1f}%, junk {100 * pool['junk']:.1f}%, "
             f"duplicate {100 * pool['duplicate']:.1f}%; true classes (non-junk rows): {truth['used']} of "
             f"{truth['k']} used, largest {100 * truth['largest_share']:.1f}%, entropy {truth['entropy']:.3f}",
             "| grouping | label accuracy | purity | classes used | largest class (fair) | entropy | mean top sim | "
             "mean margin | subset mismatched | junk | duplicate |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        d, n = r["diagnostics"], r["noise"]
        acc = f"{100 * r['accuracy']:.1f}%" if r["grouping"] == "vocabulary" else "-"
        lines.append(f"| {r['grouping']} | {acc} | {100 * r['purity']:.1f}% | {d['used']} of {d['k']} | "
                     f"{100 * d['largest_share']:.1f}% ({100 * d['fair_share']:.1f}%) | {d['entropy']:.3f} | "
                     f"{d['mean_top_sim']:.3f} | {d['mean_margin']:.3f} | {100 * n['mismatched']:.1f}% | "
                     f"{100 * n['junk']:.1f}% | {100 * n['duplicate']:.1f}% |")
    lines.append(f"subset overlap: {len(a & b)} of {len(a)} keys ({100 * len(a & b) / max(len(a), 1):.1f}%)")
    lines += [f"{r['grouping']}: {r['warning']}" for r in rows if r["warning"]]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true", help="the test-suite size (1000 web pairs, short proxy training)")
    args = ap.parse_args()
    t0 = time.time()
    cfg = DemoConfig.make(args.out, args.quick)
    layout = build(cfg, print)
    k = len(layout.class_names)
    rows = [measure(cfg, layout, cfg.emb_dir, "vocabulary"),
            measure(cfg, layout, kmeans_copy(cfg, k), f"kmeans:{k}")]
    pool = stages.noise_fractions(cfg, layout, stages.all_keys(cfg))
    truth = true_classes(cfg, layout)
    text = report(rows, pool, truth)
    print(text)
    result = {"quick": cfg.quick, "n_web": cfg.n_web, "budget": cfg.budget, "k": k, "pool": pool, "truth": truth,
              "rows": [{k_: v for k_, v in r.items() if k_ != "subset"} for r in rows],
              "overlap": len(set(rows[0]["subset"]) & set(rows[1]["subset"])), "subset_size": len(rows[0]["subset"]),
              "wall_time_s": round(time.time() - t0, 1)}
    (cfg.out / "labels_demo.json").write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
