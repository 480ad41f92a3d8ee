"""The export configuration (frozen) and the names of the files an export reads and writes."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.errors import ClipcovError


@dataclass(frozen=True)
class ExportConfig:
    """What to export: the subset folder, the source dataset, the output folder and shard size."""

    subset_dir: Path | None
    dataset_dir: Path | None = None  # default: the subset manifest's source.dataset_dir
    out_dir: Path | None = None  # default: SUBSET_DIR/shards
    shard_size: int = 10000
    workers: int = 1
    allow_missing: bool = False
    overwrite: bool = False  # replace an export of a different selection in out_dir
    keys: tuple[str, ...] | None = None  # a key list instead of a subset (then dataset_dir and out_dir are needed)
    keys_source: str = ""  # where the key list came from (a file, stdin, a uids.npy), for the manifest

    def __post_init__(self) -> None:
        for name in ("subset_dir", "dataset_dir", "out_dir"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))

        if self.keys is not None:
            object.__setattr__(self, "keys", tuple(self.keys))

    @property
    def out(self) -> Path:
        if self.out_dir is not None:
            return self.out_dir
        if self.subset_dir is None:
            raise ClipcovError("exporting a key list needs --out DIR")
        return self.subset_dir / "shards"
