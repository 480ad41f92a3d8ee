"""Shards in key order: img2dataset writes a shard's samples in the order their downloads complete,
so two downloads of one URL list hold the same samples in different orders. After the run each
finished shard's tar members and its metadata parquet are put in key order (img2dataset's keys
follow the URL list), so the same URL list always gives the same shards, and everything downstream
(embedding batches, training order) sees the same rows in the same order."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pyarrow.parquet as pq

from clipcov_cli.utils.atomic import atomic_path


def _key(name: str) -> str:
    """The WebDataset key of a member: its base name up to the first dot."""
    return name.rsplit("/", 1)[-1].split(".", 1)[0]


def sort_tar(path: Path) -> bool:
    """Rewrite ``path`` with its members in key order (a sample's own members keep their order);
    atomic. Returns whether it had to be rewritten."""
    with tarfile.open(path, "r:") as src:
        members = src.getmembers()
        order = sorted(range(len(members)), key=lambda i: (_key(members[i].name), i))
        if order == list(range(len(members))):
            return False
        with atomic_path(path) as tmp:
            with tarfile.open(tmp, "w", format=src.format) as dst:
                for i in order:
                    m = members[i]
                    dst.addfile(m, src.extractfile(m) if m.isfile() else None)
            shutil.copymode(path, tmp)
    return True


def sort_parquet(path: Path) -> bool:
    """Rewrite img2dataset's shard metadata in key order (atomic). Returns whether it was rewritten."""
    table = pq.read_table(path)
    if "key" not in table.column_names or table.num_rows < 2:
        return False
    keys = table["key"].to_pylist()
    if all(a is not None and b is not None and a <= b for a, b in zip(keys, keys[1:])):
        return False
    with atomic_path(path) as tmp:
        pq.write_table(table.sort_by("key"), tmp)
        shutil.copymode(path, tmp)
    return True


def sort_shards(out_dir: Path, shards: list[int]) -> int:
    """Put every finished shard (tar and parquet) in key order; returns how many files were rewritten.
    Idempotent: a shard already in order is only read (its tar headers and its keys)."""
    done = 0
    for shard in shards:
        tar, meta = out_dir / f"{shard:05d}.tar", out_dir / f"{shard:05d}.parquet"
        done += sort_tar(tar) if tar.exists() else 0
        done += sort_parquet(meta) if meta.exists() else 0
    return done
