"""What each selection method keeps of the demo corpus' noise, measured with its ground truth.

For every method at 10%, 20% and 30% of the web corpus, prints the fraction of mismatched, junk and
near-duplicate samples kept (the full corpus has 35%, 5%, 10% by construction) and how many of the
true classes are covered. Uses a `clipcov demo` output folder (corpus, dataset, embeddings made with
the shipped proxy CLIP); stages that are missing are run first.

    python benchmarks/select_demo_quality.py --demo-dir clipcov-demo
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq

from clipcov_cli.demo import stages
from clipcov_cli.demo.config import METHODS, DemoConfig
from clipcov_cli.select.runner import SelectConfig, run_select


def prepare(cfg: DemoConfig):
    layout = stages.make_corpus(cfg)
    stages.download(cfg, layout)
    proxy = stages.proxy(cfg)  # the shipped proxy CLIP
    stages.embed(cfg, layout, proxy, cfg.out / "demo.log")
    return layout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--demo-dir", type=Path, default=Path("clipcov-demo"))
    ap.add_argument("--budgets", default="10%,20%,30%")
    args = ap.parse_args()
    cfg = DemoConfig.make(args.demo_dir, quick=False)
    layout = prepare(cfg)
    meta = pd.concat([pq.read_table(p, columns=["key", "uid"]).to_pandas() for p in sorted(cfg.dataset_dir.glob("[0-9]*.parquet"))])
    truth = pq.read_table(layout.truth_path).to_pandas().merge(meta, on="uid").set_index("key")
    n_classes = truth.loc[truth.true_class >= 0, "true_class"].nunique()
    print(f"corpus: {len(truth)} pairs; full corpus: mismatched {100 * (truth.kind == 'mismatched').mean():.1f}%, "
          f"junk {100 * (truth.kind == 'junk').mean():.1f}%, duplicate {100 * (truth.kind == 'duplicate').mean():.1f}%, "
          f"{n_classes} classes")
    print(f"{'method':<14}{'budget':>7}{'kept':>6}{'mismatched%':>13}{'junk%':>7}{'duplicate%':>12}{'classes':>9}{'sec':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for budget in args.budgets.split(","):
            for method in METHODS:
                out = Path(tmp) / f"{method}-{budget.rstrip('%')}"
                t0 = time.perf_counter()
                res = run_select(SelectConfig(input=cfg.emb_dir, out=out, budget=budget, method=method))
                sec = time.perf_counter() - t0
                kept = truth.reindex(res.keys)
                covered = kept.loc[kept.true_class >= 0, "true_class"].nunique()
                print(f"{method:<14}{budget:>7}{len(res.keys):>6}{100 * (kept.kind == 'mismatched').mean():>13.1f}"
                      f"{100 * (kept.kind == 'junk').mean():>7.1f}{100 * (kept.kind == 'duplicate').mean():>12.1f}"
                      f"{covered:>5}/{n_classes:<3}{sec:>7.2f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
