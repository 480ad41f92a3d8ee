"""Phase 1, per source shard: copy the selected samples' members, bytes unchanged, into an
intermediate tar (atomic, then a completion marker). Runs in parallel over source shards."""

from __future__ import annotations

import tarfile
from pathlib import Path

from clipcov_cli.utils.atomic import atomic_path, write_text


def extract_shard(src_tar: Path, keys: frozenset[str], work: Path) -> Path:
    """Copy every member of ``keys`` from ``src_tar`` into ``work/{stem}.tar``; skip if done."""
    out = work / f"{src_tar.stem}.tar"
    marker = work / f"{src_tar.stem}.done"
    if marker.exists() and out.exists():
        return out
    with atomic_path(out) as tmp, tarfile.open(tmp, mode="w", format=tarfile.GNU_FORMAT) as dst:
        with tarfile.open(src_tar, mode="r|*") as src:
            for member in src:
                if not member.isfile():
                    continue
                key = member.name.rsplit("/", 1)[-1].split(".", 1)[0]
                if key in keys:
                    info = tarfile.TarInfo(member.name.rsplit("/", 1)[-1])
                    info.size = member.size
                    dst.addfile(info, src.extractfile(member))
    write_text(marker, "done\n")
    return out
