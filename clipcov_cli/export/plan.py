"""Read the request and map it onto the source: the selected keys in rank order (checked), the
source dataset folder, and which selected key lives in which source shard. The map comes from each
shard's img2dataset parquet (``key``, ``status``), which is cheap; a shard without one has its tar
headers listed instead. Reads only: nothing is written before the plan is complete."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pyarrow.parquet as pq

from clipcov_cli.errors import ClipcovError
from clipcov_cli.export.keys import check_keys, split_member
from clipcov_cli.export.tarscan import TarTruncated, scan


@dataclass(frozen=True)
class ExportPlan:
    keys: tuple[str, ...]  # every selected key, rank order
    by_shard: dict[str, frozenset[str]]  # source shard stem -> the selected keys found in it
    missing: tuple[str, ...]  # selected keys found in no shard, rank order
    unreadable: tuple[str, ...]  # source shards whose keys could not be listed
    dataset_dir: Path


def read_selection(subset_dir: Path) -> list[str]:
    """The selected keys of ``SUBSET_DIR/selection.parquet`` in rank order, checked."""
    if not subset_dir.is_dir():
        raise ClipcovError(f"subset folder {subset_dir} does not exist")
    path = subset_dir / "selection.parquet"
    if not path.is_file():
        raise ClipcovError(f"{subset_dir} has no selection.parquet: run `clipcov select ... --out {subset_dir}` first")
    try:
        table = pq.read_table(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise ClipcovError(f"cannot read {path}: {exc}".splitlines()[0]) from None
    if "key" not in table.column_names:
        raise ClipcovError(f"{path} has no 'key' column")
    if "rank" in table.column_names:
        table = table.sort_by("rank")
    keys = ["" if k is None else str(k) for k in table.column("key").to_pylist()]
    if not keys:
        raise ClipcovError(f"{path} selects no sample")
    check_keys(keys)
    return keys


def source_dataset(dataset_dir: Path | None, subset_dir: Path) -> Path:
    """``--dataset`` if given, else the subset manifest's ``source.dataset_dir``; must hold .tar shards."""
    path = dataset_dir if dataset_dir is not None else _recorded_dataset(subset_dir)
    if not path.is_dir():
        raise ClipcovError(f"source dataset {path} does not exist (pass --dataset DIR)")
    if not any(path.glob("*.tar")):
        raise ClipcovError(f"source dataset {path} holds no .tar shard")
    return path


def _recorded_dataset(subset_dir: Path) -> Path:
    try:
        manifest = json.loads((subset_dir / "manifest.json").read_text())
    except (OSError, ValueError):
        raise ClipcovError(f"{subset_dir}/manifest.json is missing or unreadable: pass --dataset DIR") from None
    recorded = ((manifest.get("source") or {}) if isinstance(manifest, dict) else {}).get("dataset_dir")
    if not recorded:
        raise ClipcovError(f"{subset_dir}/manifest.json records no source dataset: pass --dataset DIR")
    path = Path(recorded)
    if not path.is_absolute() and not path.exists() and (subset_dir / path).exists():
        path = subset_dir / path
    return path


def shard_keys(tar: Path) -> set[str] | None:
    """Keys of one source shard: its parquet's successful rows, else its tar headers; None if unreadable."""
    parquet = tar.with_suffix(".parquet")
    if parquet.is_file():
        try:
            names = pq.read_schema(parquet).names
            if "key" in names:
                table = pq.read_table(parquet, columns=[c for c in ("key", "status") if c in names])
                keys = table.column("key").to_pylist()
                if "status" in names:
                    keys = [k for k, s in zip(keys, table.column("status").to_pylist()) if s == "success"]
                return {str(k) for k in keys if k is not None}
        except Exception:  # a damaged parquet: list the tar instead
            pass
    listed: list[str] = []
    try:
        for name, _ in scan(tar, lambda name: False):  # headers only
            listed.append(split_member(name)[0])
    except TarTruncated:  # the keys before the break (the last one may be incomplete)
        return set(k for k in listed if k != listed[-1]) if listed else set()
    except (tarfile.TarError, OSError, EOFError, ValueError):
        return None
    return set(listed)


def make_plan(keys: list[str], dataset_dir: Path, report: Callable[[str, int, int], None] | None = None) -> ExportPlan:
    """Assign every selected key to the first source shard (name order) that holds it."""
    wanted = set(keys)
    by_shard: dict[str, frozenset[str]] = {}
    unreadable: list[str] = []
    tars = sorted(dataset_dir.glob("*.tar"))
    for n, tar in enumerate(tars):
        if report is not None:
            report("plan", n, len(tars))
        listed = shard_keys(tar)
        if listed is None:
            unreadable.append(tar.name)
            continue
        here = listed & wanted
        if here:
            by_shard[tar.stem] = frozenset(here)
            wanted -= here
    missing = tuple(k for k in keys if k in wanted)
    return ExportPlan(tuple(keys), by_shard, missing, tuple(unreadable), dataset_dir)


def missing_error(missing: list[str] | tuple[str, ...], dataset_dir: Path, unreadable: tuple[str, ...] = ()) -> ClipcovError:
    shown = ", ".join(missing[:5]) + (" ..." if len(missing) > 5 else "")
    extra = f"; unreadable source shards: {', '.join(unreadable[:5])}" if unreadable else ""
    return ClipcovError(f"{len(missing)} selected key(s) are not in {dataset_dir}: {shown}{extra} "
                        "(pass --allow-missing to record them in the manifest instead)")
