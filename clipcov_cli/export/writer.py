"""Phase 2: final shards in rank order, written with webdataset's TarWriter (fixed metadata, so the
same input gives byte-identical shards), each atomically with a completion marker."""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import Path

import webdataset as wds

from clipcov_cli.utils.atomic import atomic_path, write_json


def index_members(intermediates: list[Path]) -> dict[str, list[tuple[Path, str, int, int]]]:
    """key -> [(file, extension, data offset, size)] over the intermediate tars."""
    index: dict[str, list[tuple[Path, str, int, int]]] = {}
    for path in intermediates:
        with tarfile.open(path, mode="r") as tf:
            for m in tf.getmembers():
                key, ext = m.name.split(".", 1)
                index.setdefault(key, []).append((path, ext, m.offset_data, m.size))
    return index


def _sample(key: str, members: list[tuple[Path, str, int, int]], handles: dict) -> dict:
    sample: dict = {"__key__": key}
    for path, ext, offset, size in sorted(members, key=lambda m: m[1]):
        f = handles.setdefault(path, open(path, "rb"))
        f.seek(offset)
        sample[ext] = f.read(size)
    return sample


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def write_shard(out: Path, shard: int, keys: list[str], index: dict, handles: dict) -> dict:
    """Write ``{shard:05d}.tar`` with ``keys`` in order; returns its manifest entry (also the marker)."""
    name = f"{shard:05d}.tar"
    marker = out / ".work" / f"shard_{shard:05d}.json"
    if marker.exists() and (out / name).exists():
        return json.loads(marker.read_text())
    with atomic_path(out / name) as tmp, open(tmp, "wb") as f:
        writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="clipcov", group="clipcov", mode=0o444)
        for key in keys:
            writer.write(_sample(key, index[key], handles))
        writer.close()
    entry = {"shard": name, "count": len(keys), "sha256": sha256(out / name), "first_key": keys[0], "last_key": keys[-1]}
    write_json(marker, entry)
    return entry
