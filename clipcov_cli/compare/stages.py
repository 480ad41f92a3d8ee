"""The stages of `clipcov compare`. Each one writes its own folder and is skipped when that folder is
complete (a run's ``done.json``, a subset's ``manifest.json``, an export's ``shards/manifest.json``,
an eval's ``results.json`` rows), so an interrupted comparison resumes. Stages meet through files."""

from __future__ import annotations

import json
import subprocess
import sys
from contextlib import contextmanager, redirect_stderr, redirect_stdout
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow.parquet as pq

from clipcov_cli.compare.config import HEADLINE, CompareConfig, Variant
from clipcov_cli.errors import ClipcovError, JobFailed, first_line
from clipcov_cli.utils.atomic import write_json
from clipcov_cli.utils.disk import low_space_note


def clipcov_cli(*args: str | Path, log: Path) -> None:
    """Run one clipcov command in its own process (embed and eval: one call each per batch of runs)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ clipcov {' '.join(map(str, args))}\n")
        f.flush()
        r = subprocess.run([sys.executable, "-m", "clipcov_cli", *map(str, args)], stdout=f, stderr=subprocess.STDOUT)
    if r.returncode != 0:
        raise ClipcovError(f"stage failed: clipcov {' '.join(map(str, args[:2]))} (exit {r.returncode}); see {log}")


@contextmanager
def logged_to(log: Path, command: str) -> Iterator[None]:
    """Send what an in-process stage prints (and the log handlers it creates) to the log."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as f:
        f.write(f"$ {command}\n")
        f.flush()
        with redirect_stdout(f), redirect_stderr(f):
            yield


def pretrain(cfg: CompareConfig, data: Path, name: str, epochs: int, seed: int, log: Path,
             extra_args: tuple[str, ...] = (), model: str | None = None) -> Path:
    """Train (or finish training) one CLIP, in this process (a fresh process would import torch and
    open_clip_train again for each model). ``done.json`` marks a finished run."""
    from clipcov_cli.pretrain.adapter import checkpoints, drop_training_state
    from clipcov_cli.pretrain.config import PretrainConfig
    from clipcov_cli.pretrain.recipes import get_recipe, Recipe

    run = cfg.run_dir(name)
    done = run / "done.json"
    if done.exists() and Path(json.loads(done.read_text())["checkpoint"]).exists():
        return Path(json.loads(done.read_text())["checkpoint"])
    recipe: Recipe = get_recipe(cfg.recipe)
    if model is not None or cfg.model != recipe.model:
        from dataclasses import replace

        recipe = replace(recipe, model=model or cfg.model)
    pcfg = PretrainConfig(data=data, out=run, recipe=recipe, epochs=epochs, batch_size=cfg.batch_size,
                          workers=cfg.workers, seed=seed, device=cfg.device, extra_args=extra_args,
                          keep_checkpoints="last")
    command = (f"clipcov pretrain {data} --out {run} --model {recipe.model} --epochs {epochs} --seed {seed} "
               f"--batch-size {cfg.batch_size} --workers {cfg.workers} --device {cfg.device}"
               + (f" -- {' '.join(extra_args)}" if extra_args else ""))
    _train(pcfg, name, command, log)
    ckpts = checkpoints(run)  # with keep_checkpoints="last": the last epoch's only
    if not ckpts:
        raise ClipcovError(f"pretrain wrote no checkpoint under {run}; see {log}")
    ckpt = ckpts[-1]
    write_json(done, {"checkpoint": str(ckpt), "epochs": epochs, "seed": seed, "data": str(data),
                      "extra_args": list(extra_args)})
    drop_training_state(ckpt)  # after done.json: a run interrupted before it resumes from the full state
    return ckpt


def _train(pcfg, name: str, command: str, log: Path) -> None:
    from clipcov_cli.pretrain import runner

    with logged_to(log, command):
        try:
            runner.run_pretrain(pcfg)
        except ClipcovError:
            raise
        except Exception as exc:  # open_clip_train's own failure: one line, the details in the log
            import traceback

            traceback.print_exc()  # into the log (stderr is redirected there)
            # torch.save on a full disk fails with "unexpected pos", not ENOSPC: say where space is low
            raise JobFailed(f"stage failed: pretrain {name} ({type(exc).__name__}: {first_line(exc, 200)})"
                            f"{low_space_note(pcfg.out)}; see {log}") from None


def embeddings_for(cfg: CompareConfig, variant: Variant) -> Path:
    """The embeddings a variant selects from: the dataset's, or a view of them with its labels/."""
    if variant.labels is None:
        return cfg.embeddings
    labels = Path(variant.labels).resolve()
    if not labels.is_dir() or not any(labels.glob("labels_*.parquet")):
        raise ClipcovError(f"labels folder {variant.labels} of {variant.name} holds no labels_*.parquet")
    view = cfg.out / "embeddings" / variant.name
    view.mkdir(parents=True, exist_ok=True)
    record = labels.parent / "clipcov.json"  # labels made by `embed --relabel` come with their own record
    for entry in cfg.embeddings.resolve().iterdir():
        if entry.name != "labels" and not (view / entry.name).exists():
            (view / entry.name).symlink_to(record if entry.name == "clipcov.json" and record.is_file() else entry)
    if not (view / "labels").exists():
        (view / "labels").symlink_to(labels)
    return view


def kmeans_labels(cfg: CompareConfig, variant: Variant, log: Path) -> Variant:
    """A k-means variant with its labels folder: `clipcov embed --relabel --classes kmeans:K --seed 0`
    run once on a view of the embeddings under ``out/labels/kmeans-K/`` (links to their parts, its
    own clipcov.json and labels/). Other variants are returned as they are."""
    import shutil
    from dataclasses import replace

    if variant.kmeans is None:
        return variant
    k = variant.kmeans or _class_count(cfg)
    view = cfg.out / "labels" / f"kmeans-{k}"
    if not _clustered(view, k):
        view.mkdir(parents=True, exist_ok=True)
        for entry in cfg.embeddings.resolve().iterdir():
            if entry.name not in ("labels", "clipcov.json") and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
        shutil.copyfile(cfg.embeddings / "clipcov.json", view / "clipcov.json")  # --relabel rewrites it
        clipcov_cli("embed", view, "--relabel", "--classes", f"kmeans:{k}", "--seed", 0, log=log)
    return replace(variant, labels=view / "labels")


def _class_count(cfg: CompareConfig) -> int:
    path = cfg.embeddings / "clipcov.json"
    count = ((json.loads(path.read_text()) if path.is_file() else {}).get("classes") or {}).get("count")
    if not isinstance(count, int) or count < 1:
        raise ClipcovError(f"{cfg.embeddings} records no class count: give K (clipcov-kmeans:K)")
    return count


def _clustered(view: Path, k: int) -> bool:
    path = view / "clipcov.json"
    record = json.loads(path.read_text()) if path.is_file() else {}
    grouping = record.get("grouping") or {}
    return (grouping.get("kind") == "kmeans" and grouping.get("k") == k and not record.get("labels_pending")
            and any((view / "labels").glob("labels_*.parquet")))


def select(cfg: CompareConfig, variant: Variant, budget: str, seed: int) -> Path:
    from clipcov_cli.select.runner import SelectConfig, run_select

    out = cfg.subset_dir(variant, budget, seed)
    if not (out / "manifest.json").exists():
        params = dict(variant.params)
        params.setdefault("seed", seed)
        run_select(SelectConfig(input=embeddings_for(cfg, variant), out=out, budget=budget, method=variant.method,
                                params=tuple(params.items()), overwrite=True))
    return out


def export(cfg: CompareConfig, subset: Path) -> Path:
    from clipcov_cli.export import ExportConfig, run_export

    shards = subset / "shards"
    if not (shards / "manifest.json").exists():
        run_export(ExportConfig(subset_dir=subset, dataset_dir=cfg.dataset))
    return shards


def subset_keys(subset: Path) -> list[str]:
    return pq.read_table(subset / "selection.parquet", columns=["key"]).column("key").to_pylist()


def all_keys(cfg: CompareConfig) -> list[str]:
    return pq.read_table(cfg.embeddings / "metadata", columns=["key"]).column("key").to_pylist()


def read_metric(rows: list[dict], task: str, names: tuple[str, ...] | None = None) -> dict[str, float]:
    """{checkpoint path: value} from `clipcov eval`'s results.json rows, the metric read by name: the
    first of ``names`` (default: the task's headline, ``HEADLINE``) that a checkpoint has."""
    names = names or HEADLINE[task]
    found: dict[str, tuple[int, float]] = {}
    for r in rows:
        if r.get("metric") in names:
            ckpt, rank = str(Path(r["checkpoint"]).resolve()), names.index(r["metric"])
            if ckpt not in found or rank < found[ckpt][0]:
                found[ckpt] = (rank, float(r["value"]))
    return {ckpt: value for ckpt, (_, value) in found.items()}


def _rows_of(results: Path) -> list[dict]:
    rows = json.loads(results.read_text()) if results.exists() else []
    return rows["results"] if isinstance(rows, dict) else rows


def evaluate(cfg: CompareConfig, ckpts: dict[str, Path], task: str, log: Path, out: Path | None = None,
             model: str | None = None, templates: Path | None = None,
             names: tuple[str, ...] | None = None) -> dict[str, float]:
    """Run `clipcov eval` once for the checkpoints not evaluated yet; return {run name: the metric}
    (``names``: which, see ``read_metric``; default the task's headline)."""
    out = out or cfg.out / "eval" / task
    results = out / "results.json"

    def done() -> dict[str, float]:
        rows = json.loads(results.read_text()) if results.exists() else []
        return read_metric(rows["results"] if isinstance(rows, dict) else rows, task, names)

    missing = [p for p in ckpts.values() if str(p.resolve()) not in read_metric(_rows_of(results), task)]
    if missing:
        extra = ("--templates", templates) if templates is not None else ()
        clipcov_cli("eval", *missing, "--task", task, "--data", cfg.eval_data, "--model", model or cfg.model,
                    "--out", out, "--device", cfg.device, *extra, log=log)
    by_ckpt = done()
    return {name: by_ckpt[str(p.resolve())] for name, p in ckpts.items() if str(p.resolve()) in by_ckpt}


def class_histogram(cfg: CompareConfig, keys: list[str] | None) -> tuple[list[int], str]:
    """Samples per class among ``keys`` (None: the whole corpus): true classes where a truth sidecar
    is given, pseudo-labels otherwise. Returns (counts, which)."""
    if cfg.truth is not None:
        table = _truth_by_key(cfg)
        cls, which = table["true_class"], "true class"
    else:
        import pandas as pd

        lt = pd.concat([pq.read_table(p, columns=["key", "pseudo_label"]).to_pandas()
                        for p in sorted((cfg.embeddings / "labels").glob("labels_*.parquet"))])
        cls, which = lt.set_index("key")["pseudo_label"], "pseudo-label"
    values = cls if keys is None else cls.reindex(keys)
    values = values.dropna().astype(np.int64)
    values = values[values >= 0]
    n = int(cls.max()) + 1 if len(cls) else 0
    return np.bincount(values.to_numpy(), minlength=n).tolist(), which


def _truth_by_key(cfg: CompareConfig):
    import pandas as pd

    meta = pd.concat([pq.read_table(p, columns=["key", "uid"]).to_pandas()
                      for p in sorted(cfg.dataset.glob("[0-9]*.parquet"))])
    truth = pq.read_table(cfg.truth).to_pandas()
    return meta.merge(truth, on="uid").set_index("key")


def noise_fractions(cfg: CompareConfig, keys: list[str]) -> dict[str, float]:
    """Fractions of mismatched, junk and duplicate samples among ``keys`` (needs the truth sidecar)."""
    if cfg.truth is None:
        return {}
    chosen = _truth_by_key(cfg)["kind"].reindex(keys)
    return {k: float(np.mean(chosen == k)) for k in ("mismatched", "junk", "duplicate")}


def sample_images(dataset: Path, keys: list[str], limit: int) -> list[tuple[bytes, str]]:
    """(jpeg bytes, caption) of up to ``limit`` of ``keys``, in the order given, from the dataset shards."""
    import webdataset as wds

    wanted = {k: i for i, k in enumerate(keys[:limit])}
    found: dict[str, tuple[bytes, str]] = {}
    for s in wds.WebDataset(sorted(map(str, dataset.glob("*.tar"))), shardshuffle=False):
        if s["__key__"] in wanted:
            found[s["__key__"]] = (s["jpg"], s["txt"].decode())
            if len(found) == len(wanted):
                break
    return [found[k] for k in keys[:limit] if k in found]
