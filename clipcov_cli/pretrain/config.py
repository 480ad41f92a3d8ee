"""The pretrain configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.pretrain.recipes import Recipe


@dataclass(frozen=True)
class PretrainConfig:
    data: Path
    out: Path
    recipe: Recipe
    model_config: Path | None = None  # a custom architecture (JSON), registered by file stem
    epochs: int | None = None
    batch_size: int | None = None
    workers: int | None = None
    seed: int = 0
    device: str = "auto"
    extra_args: tuple[str, ...] = ()
    keys: tuple[str, ...] | None = None  # train on these keys of DATA (exported into OUT/data first)
    keys_source: str = ""  # where the keys came from, for the export manifest
    no_copy: bool = False  # a subset not exported: stream its keys from the source shards, no copy
    keep_checkpoints: str = "all"  # "all": every epoch's checkpoint; "last": each new one replaces the one before

    @property
    def model_name(self) -> str:
        return self.model_config.stem if self.model_config is not None else self.recipe.model
