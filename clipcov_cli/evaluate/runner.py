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
    check_checkpoints(cfg.checkpoints)


def check_checkpoints(checkpoints) -> None:
    for c in checkpoints:
        if not c.is_file():
            raise ClipcovError(f"checkpoint {c} does not exist")


def load_checkpoint(ckpt: Path, model: str | None, model_config: Path | None, device: str):
    """(architecture name, loaded model) of one checkpoint: the name from --model-config's stem, else
    from --model or the run's params.txt."""
    from clipcov_cli.embed.model import ModelSpec, load_model
    from clipcov_cli.evaluate.evaluator import model_name_for

    name = model_name_for(ckpt, model) if model_config is None else model_config.stem
    return name, load_model(ModelSpec(model=name, pretrained=str(ckpt), model_config=model_config, device=device))


def run_eval(cfg: EvalConfig) -> EvalResult:
    from clipcov_cli.evaluate.data import load_eval_set, templates_for
    from clipcov_cli.evaluate.evaluator import retrieval, zeroshot
    from clipcov_cli.evaluate.results import write_results

    check(cfg)
    es = load_eval_set(cfg.data, cfg.classes)
    tmpl = templates_for(cfg.data, cfg.templates) if cfg.task == "zeroshot" else ()
    rows = []
    for ckpt in cfg.checkpoints:
        name, loaded = load_checkpoint(ckpt, cfg.model, cfg.model_config, cfg.device)
        metrics = zeroshot(loaded, es, tmpl, cfg.batch_size) if cfg.task == "zeroshot" else retrieval(loaded, es, cfg.batch_size)
        rows += [{"task": cfg.task, "metric": k, "value": v, "model": name, "checkpoint": str(ckpt.resolve()),
                  "data": str(cfg.data.resolve())} for k, v in metrics.items()]
    cfg.out.mkdir(parents=True, exist_ok=True)
    return EvalResult(tuple(rows), write_results(cfg.out, rows))
