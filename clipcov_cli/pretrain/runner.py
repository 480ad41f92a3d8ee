"""`pretrain` orchestration: resolve the data, run open_clip_train once, report the checkpoint."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clipcov_cli.errors import ClipcovError, JobFailed
from clipcov_cli.pretrain.adapter import (EpochPlan, build_argv, checked_resume, checkpoints, plan_for, run_open_clip_train,
                                         temp_folder_in)
from clipcov_cli.pretrain.config import PretrainConfig
from clipcov_cli.pretrain.inputs import keyed_input, resolve_input


@dataclass(frozen=True)
class PretrainResult:
    run_dir: Path
    checkpoint: Path
    samples: int
    source: str
    argv: tuple[str, ...]
    epoch: EpochPlan | None = None


def run_pretrain(cfg: PretrainConfig, report: Callable[[str], None] | None = None) -> PretrainResult:
    """Train; ``report`` is told the epoch plan before training starts."""
    import torch

    device = cfg.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if not cfg.data.exists():  # before the run folder is made (by default it is inside DATA)
        raise ClipcovError(f"{cfg.data} does not exist")
    created = not cfg.out.exists()
    cfg.out.mkdir(parents=True, exist_ok=True)
    try:
        with temp_folder_in(cfg.out / "tmp"):  # what open_clip's imports leave in /tmp goes into the run
            if cfg.model_config is not None:
                from clipcov_cli.models import register_model_config

                register_model_config(cfg.model_config)
        data = resolve_input(cfg.data, cfg.out, cfg.no_copy) if cfg.keys is None else \
            keyed_input(cfg.data, cfg.out, cfg.keys, cfg.keys_source)
        resume = checked_resume(cfg.out)
    except ClipcovError:
        if created and not any(p.is_file() for p in cfg.out.rglob("*")):  # bad input: no empty --out left
            shutil.rmtree(cfg.out, ignore_errors=True)
        raise
    plan = plan_for(cfg, data)
    if report is not None:
        report(plan.describe())
    argv = build_argv(cfg, data, device, plan)
    code = run_open_clip_train(argv, cfg.out, resume)
    ckpts = checkpoints(cfg.out)
    if code != 0 or not ckpts:
        raise JobFailed(f"open_clip_train failed (exit {code}); see {cfg.out}/clipcov/out.log")
    return PretrainResult(cfg.out, ckpts[-1], data.samples, data.source, tuple(argv), plan)


def training_losses(run_dir: Path) -> list[float]:
    """Per-log-line training losses from open_clip_train's out.log."""
    import re

    log = run_dir / "clipcov" / "out.log"
    if not log.exists():
        raise ClipcovError(f"{log} does not exist")
    return [float(m.group(1)) for m in re.finditer(r"Contrastive_loss: ([0-9.]+)", log.read_text())]
