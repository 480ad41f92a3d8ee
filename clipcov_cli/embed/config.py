"""The embed configuration, frozen once the command line is parsed.

Model and vocabulary options left out (``None``) mean: what the existing embeddings folder was
made with, or the defaults (``ViT-B-32`` / ``openai`` / ``imagenet1k`` / ``openai`` templates /
``fp32``) for a new folder. Options given explicitly must match an existing folder (or ``--overwrite``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from clipcov_cli.embed.model import DEVICES, PRECISIONS, ModelSpec
from clipcov_cli.embed.vocab import BUILTIN_CLASSES, BUILTIN_TEMPLATES
from clipcov_cli.errors import ClipcovError

DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"
DEFAULT_PRECISION = "fp32"
DEFAULT_BATCH_SIZE = 256


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_workers() -> int:
    return max(1, min(4, available_cpus()))


def model_threads(threads: int, workers: int) -> int:
    """torch threads for the model on CPU: as asked, else the CPUs the decode workers leave free
    (oversubscribed OpenMP threads spin and slow everything down)."""
    return threads if threads > 0 else max(1, available_cpus() - workers)


@dataclass(frozen=True)
class EmbedConfig:
    dataset_dir: Path | None  # None with relabel
    out_dir: Path  # the embeddings folder (EMB_DIR with relabel)
    model: str | None = None
    pretrained: str | None = None
    model_config: Path | None = None
    classes: str | None = None
    templates: str | None = None
    batch_size: int = DEFAULT_BATCH_SIZE
    workers: int = field(default_factory=default_workers)
    device: str = "auto"
    precision: str | None = None
    threads: int = 0  # torch threads for the model on CPU; 0: the CPUs left over by the decode workers
    overwrite: bool = False
    relabel: bool = False
    engine: str = "local"  # local: decode workers + one model here; ray: one task per shard on Ray workers
    ray_address: str | None = None  # None: start a local Ray instance; "auto": join the running cluster
    num_gpus_per_worker: float | None = None  # Ray: GPUs per worker; None: 1 when the model runs on cuda, else 0
    seed: int | None = None  # --classes kmeans: the k-means seed; None: the folder's, else 0

    def __post_init__(self) -> None:
        from clipcov_cli.distribute import check_engine

        check_engine(self.engine, self.ray_address, **{"--num-gpus-per-worker": self.num_gpus_per_worker})
        if self.relabel and self.engine != "local":
            raise ClipcovError("--relabel runs locally (it reads no image): leave out --engine ray")
        if self.num_gpus_per_worker is not None and self.num_gpus_per_worker < 0:
            raise ClipcovError("--num-gpus-per-worker must be >= 0")
        if self.batch_size < 1:
            raise ClipcovError("--batch-size must be at least 1")
        if self.workers < 0:
            raise ClipcovError("--workers must be >= 0 (0 decodes in the main process)")
        if self.threads < 0:
            raise ClipcovError("--threads must be >= 0 (0: automatic)")
        if self.device not in DEVICES and not self.device.startswith("cuda:"):
            raise ClipcovError(f"unknown device {self.device!r}: use auto, cpu or cuda")
        if self.precision is not None and self.precision not in PRECISIONS:
            raise ClipcovError(f"unknown precision {self.precision!r}: use one of {', '.join(PRECISIONS)}")
        if not self.relabel and self.dataset_dir is None:
            raise ClipcovError("a dataset folder is needed (or --relabel with an embeddings folder)")

    def model_spec(self, recorded: dict[str, Any] | None = None) -> ModelSpec:
        """The model to load: explicit options, else the folder's record, else the defaults."""
        rec = recorded or {}
        config = self.model_config or (Path(rec["model_config"]) if rec.get("model_config") and self.model is None else None)
        return ModelSpec(
            model=self.model or rec.get("model") or DEFAULT_MODEL,
            pretrained=self.pretrained or rec.get("pretrained") or DEFAULT_PRETRAINED,
            model_config=config, device=self.device,
            precision=self.precision or rec.get("precision") or DEFAULT_PRECISION,
        )

    def vocabulary_args(self, recorded: dict[str, Any] | None = None) -> tuple[str, str, int]:
        """``(classes, templates, seed)``: explicit options, else the folder's record, else the built-ins."""
        rec = recorded or {}
        classes = self.classes or (rec.get("classes") or {}).get("name") or BUILTIN_CLASSES
        templates = self.templates or (rec.get("templates") or {}).get("name") or BUILTIN_TEMPLATES
        if templates == "none":  # a k-means folder's record: no templates were used
            templates = BUILTIN_TEMPLATES
        seed = self.seed if self.seed is not None else int((rec.get("grouping") or {}).get("seed") or 0)
        return classes, templates, seed
