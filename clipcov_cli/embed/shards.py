"""The dataset folder's tar shards and their expected sample counts, read without torch (so that a
re-run on a finished folder finds there is nothing to do without loading the decode machinery)."""

from __future__ import annotations

import json
from pathlib import Path

from clipcov_cli.errors import ClipcovError


def list_shards(dataset_dir: Path) -> list[Path]:
    """The dataset's tar shards, sorted by name; an error when there is none."""
    if not dataset_dir.is_dir():
        raise ClipcovError(f"dataset folder {dataset_dir} does not exist")
    shards = sorted(p for p in dataset_dir.glob("*.tar") if not p.name.startswith("."))
    if not shards:
        raise ClipcovError(f"no .tar shards in {dataset_dir}: expected img2dataset's webdataset output "
                           "({shard:05d}.tar); run `clipcov download` first")
    return shards


def expected_samples(shard: Path) -> int | None:
    """Successful samples of a shard according to img2dataset's ``{shard}_stats.json`` (for the ETA)."""
    stats = shard.with_name(f"{shard.stem}_stats.json")
    try:
        return int(json.loads(stats.read_text())["successes"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def expected_total(shards: list[Path]) -> int | None:
    """Samples expected over ``shards`` (the progress bar's total), None when a shard has no stats."""
    expected = [expected_samples(p) for p in shards]
    return None if any(e is None for e in expected) else sum(expected)
