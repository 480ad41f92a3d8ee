"""`clipcov compare`: for each budget, seed and method variant: select -> export -> pretrain; the
whole corpus at equal epochs and at equal steps; one eval per task; paired intervals; the outputs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

from clipcov_cli.compare import stages
from clipcov_cli.compare.config import BALANCED, BASELINES, CompareConfig, run_name
from clipcov_cli.compare.report import Row, comparison_table, verdict, write_report, write_results
from clipcov_cli.compare.stats import paired_difference, t_interval
from clipcov_cli.errors import ClipcovError
from clipcov_cli.utils.budget import parse_budget

FULL = "full"
EQUAL_STEPS = "full (equal steps)"


@dataclass(frozen=True)
class Extras:
    """What a caller (the demo) adds to the outputs: meta fields, notes, a title, the log file."""

    meta: dict = field(default_factory=dict)
    notes: tuple[str, ...] = ()
    title: str = "clipcov compare"
    log: Path | None = None
    started: float | None = None  # when the caller started (wall_time_s counts from there)


@dataclass(frozen=True)
class CompareResult:
    rows: list[Row]
    report: Path
    results: Path
    notes: list[str]
    seconds: float


@dataclass(frozen=True)
class _Run:
    """One trained model: its row (method, budget) and seed."""

    method: str
    budget: str
    seed: int
    samples: int
    keys_from: Path | None  # the subset folder (None: the whole corpus)


def run_compare(cfg: CompareConfig, echo: Callable[[str], None], extras: Extras = Extras()) -> CompareResult:
    t0 = time.time()
    _check(cfg)
    cfg.out.mkdir(parents=True, exist_ok=True)
    log = extras.log or cfg.out / "compare.log"
    cfg = replace(cfg, variants=tuple(stages.kmeans_labels(cfg, v, log) for v in cfg.variants))
    n = len(stages.all_keys(cfg))
    runs, ckpts = _train_all(cfg, n, echo, log)
    zs = stages.evaluate(cfg, ckpts, "zeroshot", log)
    bal = stages.evaluate(cfg, ckpts, "zeroshot", log, names=BALANCED)  # the same results.json: no second eval
    rt = stages.evaluate(cfg, ckpts, "retrieval", log)
    echo(f"evaluated {len(ckpts)} models on {cfg.eval_data}")
    rows = _rows(cfg, runs, zs, rt, n, bal)
    mine = [v.name for v in cfg.variants if v.method == "clipcov"] or ["clipcov"]  # ClipCov under each grouping
    notes = [line for name in mine for line in verdict(rows, name)] + list(extras.notes)
    seconds = time.time() - t0
    meta = {"title": extras.title, "seeds": list(cfg.seeds), "budgets": list(cfg.budgets), "epochs": cfg.epochs,
            "batch_size": cfg.batch_size, "model": cfg.model, "dataset": str(cfg.dataset), "eval_data": str(cfg.eval_data),
            "interval": "95% Student-t over seeds of the paired per-seed differences (fractions of top-1)",
            "samples": n, **extras.meta, "compare_wall_time_s": round(seconds, 1),
            "wall_time_s": round(time.time() - (extras.started or t0), 1), "notes": notes}
    results = write_results(cfg.out, rows, meta)
    kept, dropped = _examples(cfg, runs)
    report = write_report(cfg.out, rows, extras.title, kept, dropped, meta)
    echo(comparison_table(rows, extras.title))  # type: ignore[arg-type]
    for line in notes:
        echo(line)
    return CompareResult(rows, report, results, notes, seconds)


def _check(cfg: CompareConfig) -> None:
    for path, what in ((cfg.dataset, "dataset"), (cfg.eval_data, "--eval-data")):
        if not path.exists():
            raise ClipcovError(f"{what} {path} does not exist")
    if not (cfg.embeddings / "metadata").is_dir():
        raise ClipcovError(f"{cfg.embeddings} holds no embeddings (metadata/ missing): run `clipcov embed {cfg.dataset}` first")
    for b in cfg.budgets:
        parse_budget(b)


def _train_all(cfg: CompareConfig, n: int, echo, log: Path) -> tuple[list[_Run], dict[str, Path]]:
    runs: list[_Run] = []
    ckpts: dict[str, Path] = {}
    for seed in cfg.seeds:
        for budget in cfg.budgets:
            for variant in cfg.variants:
                subset = stages.select(cfg, variant, budget, seed)
                shards = stages.export(cfg, subset)
                name = run_name(variant.name, budget, seed)
                ckpts[name] = stages.pretrain(cfg, shards, name, cfg.epochs, seed, log)
                runs.append(_Run(variant.name, budget, seed, len(stages.subset_keys(subset)), subset))
                echo(f"seed {seed}, {budget}: {variant.name} selected, exported and trained")
            if cfg.full:
                runs.append(_equal_steps(cfg, n, budget, seed, log, ckpts))
        if cfg.full:
            ckpts[run_name(FULL, "100%", seed)] = stages.pretrain(cfg, cfg.dataset, run_name(FULL, "100%", seed),
                                                                  cfg.epochs, seed, log)
            runs.append(_Run(FULL, "100%", seed, n, None))
            echo(f"seed {seed}: the whole corpus trained (equal epochs, and equal steps per budget)")
    return runs, ckpts


def _equal_steps(cfg: CompareConfig, n: int, budget: str, seed: int, log: Path, ckpts: dict[str, Path]) -> _Run:
    """The whole corpus for as many steps as a subset of this budget (same batch, same epochs): each
    epoch reads as many samples as the subset holds."""
    b = parse_budget(budget).resolve(n)
    batch = min(cfg.batch_size, b)
    name = run_name("full-eqsteps", budget, seed)
    extra = ("--batch-size", str(batch), "--train-num-samples", str(b // batch * batch))
    ckpts[name] = stages.pretrain(cfg, cfg.dataset, name, cfg.epochs, seed, log, extra_args=extra)
    return _Run(EQUAL_STEPS, budget, seed, n, None)


def _rows(cfg: CompareConfig, runs: list[_Run], zs: dict[str, float], rt: dict[str, float], n: int,
          bal: dict[str, float] | None = None) -> list[Row]:
    bal = bal or {}
    corpus_hist, which = stages.class_histogram(cfg, None)
    groups: dict[tuple[str, str], list[_Run]] = {}
    for r in runs:
        groups.setdefault((r.method, r.budget), []).append(r)

    def key(r: _Run) -> str:
        method = {FULL: FULL, EQUAL_STEPS: "full-eqsteps"}.get(r.method, r.method)
        return run_name(method, r.budget, r.seed)

    by_seed = {g: ({r.seed: zs[key(r)] for r in rs if key(r) in zs}, {r.seed: rt[key(r)] for r in rs if key(r) in rt})
               for g, rs in groups.items()}
    rows = []
    for (method, budget), rs in groups.items():
        top1, recall = by_seed[(method, budget)]
        keys = stages.subset_keys(rs[0].keys_from) if rs[0].keys_from is not None else None
        vs = {}
        for base in BASELINES:
            other = by_seed.get((base, budget))
            if base != method and other is not None and (iv := paired_difference(top1, other[0])) is not None:
                vs[base] = iv.to_json()
        hist = stages.class_histogram(cfg, keys)[0] if keys is not None else corpus_hist
        rows.append(Row(method=method, budget=budget, samples=rs[0].samples, seeds=sorted(top1),
                        top1=[top1[s] for s in sorted(top1)], recall1=[recall[s] for s in sorted(recall)],
                        top1_ci95=_ci(list(top1.values())), noise=stages.noise_fractions(cfg, keys) if keys is not None
                        else stages.noise_fractions(cfg, stages.all_keys(cfg)),
                        vs=vs, classes=hist, classes_of=which,
                        balanced=[bal[key(r)] for r in sorted(rs, key=lambda r: r.seed) if key(r) in bal]))
    return rows


def _ci(values: list[float]) -> list[float] | None:
    if not values:
        return None
    return t_interval(values).to_json()["ci95"]


def _examples(cfg: CompareConfig, runs: list[_Run], n: int = 24):
    """Images of the first variant's subset at the first budget and seed: the first kept, and a
    seeded sample of the dropped."""
    import numpy as np

    first = next((r for r in runs if r.keys_from is not None), None)
    if first is None:
        return [], []
    sel = stages.subset_keys(first.keys_from)
    chosen = set(sel)
    rest = [k for k in stages.all_keys(cfg) if k not in chosen]
    rng = np.random.default_rng(0)
    dropped = [rest[i] for i in sorted(rng.choice(len(rest), size=min(n, len(rest)), replace=False))]
    return stages.sample_images(cfg.dataset, sel, n), stages.sample_images(cfg.dataset, dropped, n)
