"""The export configuration (frozen) and the names of the files an export reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ExportConfig:
    """What to export: the subset folder, the source dataset, the output folder and shard size."""

    subset_dir: Path
    dataset_dir: Path | None = None  # default: the subset manifest's source.dataset_dir
    out_dir: Path | None = None  # default: SUBSET_DIR/shards
    shard_size: int = 10000
    workers: int = 1
    allow_missing: bool = False
    overwrite: bool = False  # replace an export of a different selection in out_dir

    def __post_init__(self) -> None:
        for name in ("subset_dir", "dataset_dir", "out_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

    @property
    def out(self) -> Path:
        return self.out_dir if self.out_dir is not None else self.subset_dir / "shards"
