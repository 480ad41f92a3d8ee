"""Phase 1, one unit per source shard (the units run in parallel): read the source tar's headers
once (``tarscan``: unselected members' data is skipped), and copy each selected sample's members
(.jpg, .txt, .json and any other) byte for byte into ``.work/src/{stem}.bin``; then write the
index ``{stem}.json`` atomically as the unit's completion marker. A finished unit is skipped.

A truncated source shard (it ends early) gives the samples before the break — as embed read them —
and its index says so (``truncated``): the samples after it are then missing, which ``--allow-missing``
records (without it, the usual missing-keys error names the shard)."""

from __future__ import annotations

import json
import os
from pathlib import Path

from clipcov_cli.export.keys import split_member
from clipcov_cli.export.records import encode_record
from clipcov_cli.export.tarscan import TarTruncated, scan
from clipcov_cli.utils.atomic import atomic_path, write_json


def index_path(work_src: Path, stem: str) -> Path:
    return work_src / f"{stem}.json"


def extract_shard(src_tar: Path, keys: frozenset[str], work_src: Path) -> Path:
    """Copy the samples of ``keys`` found in ``src_tar``; returns the index path (skip if done).

    Index: {"source", "keys", "offsets", "lengths", "exts" (member extensions per sample, in the
    source's order), "payload" (member bytes per sample), "repeated" (later groups of an already
    copied key, ignored)}."""
    index = index_path(work_src, src_tar.stem)
    if index.exists():
        return index
    entries: dict = {"source": src_tar.name, "keys": [], "offsets": [], "lengths": [], "exts": [], "payload": [],
                     "repeated": 0, "truncated": False}
    seen: set[str] = set()
    with atomic_path(work_src / f"{src_tar.stem}.bin") as tmp, open(tmp, "wb") as out:
        for key, members in _selected_samples(src_tar, keys, entries):
            if key in seen:
                entries["repeated"] += 1
                continue
            seen.add(key)
            record = encode_record(members)
            entries["keys"].append(key)
            entries["offsets"].append(out.tell())
            entries["lengths"].append(len(record))
            entries["exts"].append([ext for ext, _ in members])
            entries["payload"].append(sum(len(d) for _, d in members))
            out.write(record)
        out.flush()
        os.fsync(out.fileno())
    write_json(index, entries)
    return index


def _selected_samples(src_tar: Path, keys: frozenset[str], entries: dict):
    """(key, [(ext, bytes), ...]) for each contiguous group of members of a selected key. At a
    truncation the group under way (maybe incomplete) is dropped and ``entries["truncated"]`` set."""
    current: str | None = None
    members: list[tuple[str, bytes]] = []
    try:
        for name, data in scan(src_tar, lambda name: split_member(name)[0] in keys):
            key, ext = split_member(name)
            if key != current:
                if members:
                    yield current, members
                current, members = key, []
            if data is not None and ext and ext not in (e for e, _ in members):  # no ext: not a sample member
                members.append((ext, data))
    except TarTruncated:
        entries["truncated"] = True
        return
    if members:
        yield current, members


def load_index(path: Path) -> dict:
    return json.loads(path.read_text())
