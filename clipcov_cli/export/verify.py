"""Phase 3, one unit per final shard (parallel): re-read the shard from disk and check it against
the plan: its sha256 equals the recorded one, and its members are exactly the planned samples'
members, in order, with the byte counts copied from the source. The whole-export checks (count
equals selected minus missing, no key twice, nothing extra in OUT) are in ``check_totals``."""

from __future__ import annotations

import hashlib
import tarfile
from pathlib import Path

from clipcov_cli.export.keys import split_member
from clipcov_cli.export.writer import Item


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 22):
            h.update(block)
    return h.hexdigest()


def verify_shard(path: Path, entry: dict, items: list[Item]) -> str | None:
    """None if the shard is as planned, else a one-line reason."""
    try:
        if sha256_file(path) != entry["sha256"]:
            return f"{path.name} does not match its recorded sha256"
        with tarfile.open(path, mode="r") as tf:
            members = [(m.name, m.size) for m in tf if m.isfile()]
    except (OSError, tarfile.TarError, EOFError) as exc:
        return f"{path.name} cannot be read back: {exc}"
    expected = [name for it in items for name in it.names()]
    if [name for name, _ in members] != expected:
        keys = list(dict.fromkeys(split_member(name)[0] for name, _ in members))
        return f"{path.name} holds {len(keys)} samples whose members differ from the {len(items)} planned"
    sizes: dict[str, int] = {}
    for name, size in members:
        key = split_member(name)[0]
        sizes[key] = sizes.get(key, 0) + size
    wrong = [it.key for it in items if sizes[it.key] != it.payload]
    if wrong:
        return f"{path.name}: {len(wrong)} samples differ in size from the source, e.g. {wrong[0]}"
    return None


def check_totals(selected: list[str], missing: list[str], exported: list[str], extra_tars: list[str]) -> str | None:
    """The export as a whole: every selected key once, except the recorded missing ones; nothing else."""
    if len(exported) != len(set(exported)):
        return "an exported key appears twice"
    if len(exported) != len(selected) - len(missing):
        return f"exported {len(exported)} samples, expected {len(selected) - len(missing)}"
    gone = set(missing)
    if exported != [k for k in selected if k not in gone]:
        return "the exported keys differ from the selection"
    if extra_tars:
        return f"the output folder holds .tar files the export did not write: {', '.join(extra_tars[:3])}"
    return None
