"""`eval` orchestration: load the data once, evaluate each checkpoint on one task, write results.json."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.errors import ClipcovError

TASKS = ("zeroshot", "retrieval")


@dataclass(frozen=True)
class EvalConfig:
    checkpoints: tuple[Path, ...]
    data: Path
    task: str = "zeroshot"
    classes: Path | None = None
    templates: str | None = None
    model: str | None = None
    model_config: Path | None = None
    out: Path = Path(".")
    batch_size: int = 128
    device: str = "auto"


@dataclass(frozen=True)
class EvalResult:
    rows: tuple[dict, ...]  # task, metric, value, model, checkpoint, data
    path: Path  # results.json


def check(cfg: EvalConfig) -> None:
    if cfg.task not in TASKS:
        raise ClipcovError(f"unknown --task {cfg.task!r}: use {' or '.join(TASKS)}")
    for c in cfg.checkpoints:
        if not c.is_file():
            raise ClipcovError(f"checkpoint {c} does not exist")


def run_eval(cfg: EvalConfig) -> EvalResult:
    from clipcov_cli.embed.model import ModelSpec, load_model
    from clipcov_cli.evaluate.data import load_eval_set, templates_for
    from clipcov_cli.evaluate.evaluator import model_name_for, retrieval, zeroshot
    from clipcov_cli.evaluate.results import write_results

    check(cfg)
    es = load_eval_set(cfg.data, cfg.classes)
    tmpl = templates_for(cfg.data, cfg.templates) if cfg.task == "zeroshot" else ()
    rows = []
    for ckpt in cfg.checkpoints:
        name = model_name_for(ckpt, cfg.model) if cfg.model_config is None else cfg.model_config.stem
        loaded = load_model(ModelSpec(model=name, pretrained=str(ckpt), model_config=cfg.model_config, device=cfg.device))
        metrics = zeroshot(loaded, es, tmpl, cfg.batch_size) if cfg.task == "zeroshot" else retrieval(loaded, es, cfg.batch_size)
        rows += [{"task": cfg.task, "metric": k, "value": v, "model": name, "checkpoint": str(ckpt.resolve()),
                  "data": str(cfg.data.resolve())} for k, v in metrics.items()]
    cfg.out.mkdir(parents=True, exist_ok=True)
    return EvalResult(tuple(rows), write_results(cfg.out, rows))
