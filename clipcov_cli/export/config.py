"""The export configuration."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportConfig:
    subset_dir: Path
    dataset_dir: Path | None = None  # default: the manifest's source.dataset_dir
    out_dir: Path | None = None  # default: SUBSET_DIR/shards
    shard_size: int = 10000
    workers: int = 1
    allow_missing: bool = False

    @property
    def out(self) -> Path:
        return self.out_dir if self.out_dir is not None else self.subset_dir / "shards"
