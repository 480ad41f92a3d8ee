"""The one adapter to open_clip_train: builds its argv from a PretrainConfig in one place,
registers a custom model config in this process, and calls ``open_clip_train.main.main(argv)``.

open_clip_train has no flag for a custom architecture; `open_clip.add_model_config` in the same
process makes it known by name. Extra open_clip_train flags given after `--` are appended last, so
they override the recipe (argparse keeps the last value)."""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.errors import ClipcovError, first_line
from clipcov_cli.pretrain.config import PretrainConfig
from clipcov_cli.pretrain.inputs import TrainData
from clipcov_cli.pretrain.order import seeded_sample_order

RUN_NAME = "clipcov"


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch reads: ``samples`` (open_clip_train's --train-num-samples) distinct samples in
    batches of ``batch`` on ``workers`` loader workers per process, ``world`` processes."""

    batch: int
    workers: int
    world: int
    samples: int
    total: int  # samples in the data
    workers_asked: int

    def describe(self) -> str:
        text = (f"each epoch reads {self.samples:,} of {self.total:,} samples once "
                f"(batch {self.batch} x {self.workers} loader worker(s) x {self.world} process(es)")
        if self.workers < self.workers_asked:
            text += f"; {self.workers} worker(s) instead of {self.workers_asked}: more read each epoch so"
        skipped = self.total - self.samples
        return text + (f"; {skipped:,} left out each epoch, a different draw each epoch)" if skipped else ")")


def epoch_plan(data: TrainData, batch: int, workers: int, world: int) -> EpochPlan:
    """The loader settings under which an epoch reads each sample at most once.

    open_clip_train hands shards round-robin (after a seeded shuffle) to ``workers x world``
    loaders and has each read the same number of batches, re-reading its shards when they run out.
    So each loader may read no more than the smallest share it can be dealt: the sum of the
    ``len(shards) // loaders`` smallest shards, in whole batches. The worker count (at most the one
    asked for) that reads the most samples per epoch wins; ties go to more workers."""
    counts = sorted(data.shard_counts())
    if len(counts) < world:
        raise ClipcovError(f"{len(counts)} shard(s) for {world} processes: open_clip_train needs one shard per process")
    batch = max(1, min(batch, data.samples))
    best: EpochPlan | None = None
    for w in range(min(max(1, workers), len(counts) // world), 0, -1):
        loaders = w * world
        per_loader = sum(counts[: len(counts) // loaders]) // batch
        plan = EpochPlan(batch, w, world, per_loader * batch * loaders, data.samples, workers)
        if best is None or plan.samples > best.samples:
            best = plan
    if best is None or best.samples == 0:
        raise ClipcovError(f"batch {batch} x {world} processes is more than the smallest process' share of the "
                           f"{data.samples:,} samples: lower --batch-size")
    return best


def world_size() -> int:
    """The number of training processes (torchrun's WORLD_SIZE; 1 without it)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def plan_for(cfg: PretrainConfig, data: TrainData) -> EpochPlan:
    r = cfg.recipe
    workers = cfg.workers if cfg.workers is not None else r.workers
    return epoch_plan(data, cfg.batch_size or r.batch_size, workers, world_size())


def build_argv(cfg: PretrainConfig, data: TrainData, device: str, plan: EpochPlan | None = None) -> list[str]:
    r = cfg.recipe
    plan = plan or plan_for(cfg, data)
    argv = [
        "--train-data", "::".join(str(p) for p in data.shards),
        # each loader reads whole batches of its own shards and never runs out (see epoch_plan)
        "--train-num-samples", str(plan.samples),
        "--dataset-type", "webdataset",
        "--model", cfg.model_name,
        "--batch-size", str(plan.batch),
        "--epochs", str(cfg.epochs or r.epochs),
        "--lr", str(r.lr), "--wd", str(r.wd), "--warmup", str(r.warmup), "--lr-scheduler", "cosine",
        "--workers", str(plan.workers),
        "--logs", str(cfg.out), "--name", RUN_NAME,
        "--save-frequency", "1", "--resume", "latest",
        "--zeroshot-frequency", "0", "--val-frequency", "0", "--report-to", "",
        "--seed", str(cfg.seed), "--device", device, "--log-every-n-steps", "10",
        "--precision", "amp" if device.startswith("cuda") else "fp32",
    ]
    if cfg.keep_checkpoints == "last":
        argv.append("--delete-previous-checkpoint")
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
    if "state_dict" in checkpoint and "optimizer" not in checkpoint:
        raise ClipcovError(f"cannot resume from {latest}: it holds the weights only (no optimizer state; "
                           f"a finished compare/demo run keeps no more); move it away to start afresh, or choose another --out")
    return Path(latest)



@contextlib.contextmanager
def temp_folder_in(folder: Path):
    """Point Python's temp folder into ``folder`` for a while: what open_clip and open_clip_train
    create there on import (wandb's ``wandb-media``/``wandb-artifacts``, torch's
    ``torchinductor_<user>``) lands in the run folder, not in /tmp. Not while training: the
    loader's workers share tensors through Unix sockets under the temp folder, whose path must stay
    short (108 bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    before = tempfile.tempdir
    tempfile.tempdir = str(folder)
    try:
        yield
    finally:
        tempfile.tempdir = before


def run_open_clip_train(argv: list[str], run_dir: Path | None = None, resume: Path | None = None) -> int:
    """Call ``open_clip_train.main.main(argv)`` in this process, imported with the temp folder in
    ``RUN_DIR/tmp``. open_clip_train adds handlers to the root logger and raises its level on every
    call; they are removed afterwards, so that several runs in one process (the demo) do not log into
    each other's files. ``resume``: the checkpoint it resumes from; one it cannot load into this
    model is a one-line error."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    os.environ.setdefault("WANDB_MODE", "disabled")
    if run_dir is not None:
        with temp_folder_in(run_dir / "tmp"):  # only the imports: the loader's sockets need a short path
            import open_clip_train.main  # noqa: F401
    return _train(argv, resume)


def _train(argv: list[str], resume: Path | None) -> int:
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


WEIGHTS_KEYS = ("epoch", "name", "state_dict")  # what a finished compare/demo run's checkpoint keeps


def drop_training_state(checkpoint: Path) -> None:
    """Rewrite a finished run's checkpoint with its weights only (``epoch``, ``name``, ``state_dict``;
    no optimizer or scaler state: about a third of the size), atomically. Such a checkpoint evaluates
    and embeds as before but no longer resumes training."""
    import torch

    from clipcov_cli.utils.atomic import atomic_path

    ckpt = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or set(ckpt) <= set(WEIGHTS_KEYS):
        return
    with atomic_path(checkpoint) as tmp:
        torch.save({k: ckpt[k] for k in WEIGHTS_KEYS if k in ckpt}, tmp)


def checkpoints(run_dir: Path) -> list[Path]:
    ckpts = (run_dir / RUN_NAME / "checkpoints").glob("epoch_*.pt")
    return sorted((p for p in ckpts if p.stem.split("_")[1].isdigit()), key=lambda p: int(p.stem.split("_")[1]))
