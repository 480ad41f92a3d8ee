"""Check an export: every selected key exactly once, nothing else, counts and checksums as recorded."""

from __future__ import annotations

import tarfile
from pathlib import Path

from clipcov_cli.errors import JobFailed
from clipcov_cli.export.writer import sha256


def verify_export(out: Path, keys: tuple[str, ...], entries: list[dict]) -> None:
    seen: list[str] = []
    for e in entries:
        path = out / e["shard"]
        if sha256(path) != e["sha256"]:
            raise JobFailed(f"{path} does not match its checksum: delete it and re-run export")
        with tarfile.open(path, mode="r") as tf:
            shard_keys = []
            for m in tf.getmembers():
                k = m.name.split(".", 1)[0]
                if not shard_keys or shard_keys[-1] != k:
                    shard_keys.append(k)
        if len(shard_keys) != e["count"]:
            raise JobFailed(f"{path} holds {len(shard_keys)} samples, its record says {e['count']}")
        seen += shard_keys
    if len(seen) != len(set(seen)):
        raise JobFailed("an exported key appears twice")
    if seen != list(keys):
        lost = set(keys) - set(seen)
        extra = set(seen) - set(keys)
        raise JobFailed(f"export does not match the selection: {len(lost)} missing, {len(extra)} extra")
