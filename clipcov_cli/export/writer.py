"""Phase 2, one unit per final shard (the units run in parallel): write ``{n:05d}.tar`` with
webdataset's own ``TarWriter``, samples in rank order, members' bytes exactly as copied in phase 1.
Fixed owner, mode and mtime make the same input give byte-identical shards. The shard is written
to a temporary name and renamed; its marker (count, bytes, sha256, hashed while writing) last."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

from clipcov_cli.export.records import decode_record
from clipcov_cli.utils.atomic import atomic_path, write_json

# The tar header fields that would otherwise vary between runs and machines.
# (mtime must be an int: tarfile's default PAX format adds a header record for a float one.)
TAR_OWNER = {"user": "clipcov", "group": "clipcov", "mode": 0o444, "mtime": 0}


class Item(NamedTuple):
    """One sample to write: where its phase-1 record is, and what it holds."""

    key: str
    stem: str  # source shard stem: the record is in .work/src/{stem}.bin
    offset: int
    length: int
    exts: tuple[str, ...]
    payload: int  # bytes of its members together

    def names(self) -> list[str]:
        """Its member names in the order TarWriter writes them."""
        return [f"{self.key}.{ext}" for ext in sorted(self.exts)]


class _HashingFile:
    """A write-only file that hashes and counts what passes through it."""

    def __init__(self, f) -> None:
        self.f, self.sha, self.size = f, hashlib.sha256(), 0

    def write(self, data: bytes) -> int:
        self.sha.update(data)
        self.size += len(data)
        return self.f.write(data)


def write_shard(out_tar: Path, marker: Path, items: list[Item], work_src: Path) -> dict:
    """Write one final shard from phase-1 records; returns its manifest entry (also its marker)."""
    import webdataset as wds  # here, not at import: webdataset loads torch (1-2 s), which a finished export never needs

    with atomic_path(out_tar) as tmp, open(tmp, "wb") as f:
        sink = _HashingFile(f)
        writer = wds.TarWriter(sink, encoder=False, keep_meta=True, **TAR_OWNER)
        for key, members in _read_samples(items, work_src):
            writer.write({"__key__": key, **dict(members)})
        writer.close()
        f.flush()
        os.fsync(f.fileno())
    entry = {"shard": out_tar.name, "count": len(items), "bytes": sink.size, "sha256": sink.sha.hexdigest(),
             "first_key": items[0].key, "last_key": items[-1].key}
    write_json(marker, entry)
    return entry


def _read_samples(items: list[Item], work_src: Path):
    fds: dict[str, int] = {}
    try:
        for it in items:
            if it.stem not in fds:
                fds[it.stem] = os.open(work_src / f"{it.stem}.bin", os.O_RDONLY)
            buf = os.pread(fds[it.stem], it.length, it.offset)
            if len(buf) != it.length:
                raise OSError(f"{it.stem}.bin is shorter than its index says")
            yield it.key, decode_record(buf)
    finally:
        for fd in fds.values():
            os.close(fd)


def load_marker(marker: Path, out_tar: Path, items: list[Item]) -> dict | None:
    """The marker of a shard finished by an earlier run, if it matches these items and the file."""
    try:
        entry = json.loads(marker.read_text())
    except (OSError, ValueError):
        return None
    ok = (entry.get("count") == len(items) and entry.get("first_key") == items[0].key
          and entry.get("last_key") == items[-1].key and out_tar.is_file() and out_tar.stat().st_size == entry.get("bytes"))
    return entry if ok else None
