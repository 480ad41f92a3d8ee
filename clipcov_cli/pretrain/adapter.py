"""The one adapter to open_clip_train: builds its argv from a PretrainConfig in one place,
registers a custom model config in this process, and calls ``open_clip_train.main.main(argv)``.

open_clip_train has no flag for a custom architecture; `open_clip.add_model_config` in the same
process makes it known by name. Extra open_clip_train flags given after `--` are appended last, so
they override the recipe (argparse keeps the last value)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from clipcov_cli.errors import ClipcovError, first_line
from clipcov_cli.pretrain.config import PretrainConfig
from clipcov_cli.pretrain.inputs import TrainData
from clipcov_cli.pretrain.order import seeded_sample_order

RUN_NAME = "clipcov"


def build_argv(cfg: PretrainConfig, data: TrainData, device: str) -> list[str]:
    r = cfg.recipe
    batch = min(cfg.batch_size or r.batch_size, data.samples)
    workers = max(1, min(cfg.workers if cfg.workers is not None else r.workers, len(data.shards)))
    argv = [
        "--train-data", "::".join(str(p) for p in data.shards),
        # whole batches only: open_clip_train rounds the batch count up and would repeat samples
        "--train-num-samples", str(data.samples // batch * batch),
        "--dataset-type", "webdataset",
        "--model", cfg.model_name,
        "--batch-size", str(batch),
        "--epochs", str(cfg.epochs or r.epochs),
        "--lr", str(r.lr), "--wd", str(r.wd), "--warmup", str(r.warmup), "--lr-scheduler", "cosine",
        "--workers", str(workers),
        "--logs", str(cfg.out), "--name", RUN_NAME,
        "--save-frequency", "1", "--resume", "latest",
        "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
        "--seed", str(cfg.seed), "--device", device, "--log-every-n-steps", "10",
        "--precision", "amp" if device.startswith("cuda") else "fp32",
    ]
    return argv + list(cfg.extra_args)


def checked_resume(run_dir: Path) -> Path | None:
    """The checkpoint ``--resume latest`` will load (open_clip_train's own choice), checked first:
    open_clip_train loads it with a plain ``torch.load``, so it must load with ``weights_only=True``
    (tensors and plain containers only: a planted pickle is refused, never run). None: a fresh run."""
    from open_clip_train.main import get_latest_checkpoint

    latest = get_latest_checkpoint(str(run_dir / RUN_NAME / "checkpoints"), remote=False)
    if latest is None:
        return None
    import torch

    try:
        checkpoint = torch.load(latest, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - an unpickling refusal, a damaged or foreign file
        raise ClipcovError(f"cannot resume from {latest}: it does not load with torch.load(weights_only=True) "
                           f"({first_line(exc, 160)}); move it away to start afresh, or choose another --out") from None
    if not isinstance(checkpoint, dict):
        raise ClipcovError(f"cannot resume from {latest}: it is not a training checkpoint (a dict of state dicts)")
    return Path(latest)


def run_open_clip_train(argv: list[str], resume: Path | None = None) -> int:
    """Call ``open_clip_train.main.main(argv)`` in this process. open_clip_train adds handlers to
    the root logger and raises its level on every call; they are removed afterwards, so that
    several runs in one process (the demo) do not log into each other's files. ``resume``: the
    checkpoint it resumes from; one it cannot load into this model is a one-line error."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    from open_clip_train.main import main as train_main

    from clipcov_cli.models import register_model_config

    register_model_config()  # built-in configs (clipcov-tiny) by name
    root = logging.getLogger()
    handlers = list(root.handlers)
    levels = {name: lg.level for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)}
    root_level = root.level
    try:
        with seeded_sample_order(argv):  # its own sample shuffle is seeded by the clock
            result = train_main(argv)
    except (RuntimeError, ValueError, KeyError) as exc:
        if resume is None or not any(w in str(exc) for w in ("state_dict", "parameter group", "'epoch'", "'optimizer'")):
            raise
        raise ClipcovError(f"cannot resume from {resume}: it is not a checkpoint of this model and recipe "
                           f"({first_line(exc, 160)}); move it away to start afresh, or choose another --out") from None
    finally:  # it also sets every existing logger to INFO (torch's exit-time chatter): restore them
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(root_level)
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))
    return 0 if result is None else int(result)


def checkpoints(run_dir: Path) -> list[Path]:
    ckpts = (run_dir / RUN_NAME / "checkpoints").glob("epoch_*.pt")
    return sorted((p for p in ckpts if p.stem.split("_")[1].isdigit()), key=lambda p: int(p.stem.split("_")[1]))
