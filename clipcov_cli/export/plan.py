"""Which selected key lives in which source shard, from the shards' img2dataset parquet files
(falling back to listing a tar's members when its parquet is missing). Validates keys first."""

from __future__ import annotations

import json
import re
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq

from clipcov_cli.errors import ClipcovError

_SAFE_KEY = re.compile(r"^[A-Za-z0-9_\-][A-Za-z0-9_\-.]*$")


@dataclass(frozen=True)
class ExportPlan:
    keys: tuple[str, ...]  # selected keys in rank order (missing ones removed)
    by_shard: dict[str, frozenset[str]]  # source shard stem -> selected keys in it
    missing: tuple[str, ...]
    dataset_dir: Path


def read_selection(subset_dir: Path) -> list[str]:
    path = subset_dir / "selection.parquet"
    if not subset_dir.is_dir():
        raise ClipcovError(f"subset folder {subset_dir} does not exist")
    if not path.exists():
        raise ClipcovError(f"{subset_dir} has no selection.parquet: run `clipcov select ... --out {subset_dir}` first")
    table = pq.read_table(path)
    if "key" not in table.column_names:
        raise ClipcovError(f"{path} has no key column")
    if "rank" in table.column_names:
        table = table.sort_by("rank")
    keys = [str(k) for k in table.column("key").to_pylist()]
    check_keys(keys)
    return keys


def check_keys(keys: list[str]) -> None:
    """Refuse keys that could escape the output folder or are not single names."""
    bad = [k for k in keys if not _SAFE_KEY.match(k) or ".." in k]
    if bad:
        raise ClipcovError(f"refusing {len(bad)} unsafe key(s) (path separators, '..' or absolute paths), e.g. {bad[0]!r}")
    if len(set(keys)) != len(keys):
        raise ClipcovError("selection.parquet lists a key twice")


def source_dataset(cfg_dataset: Path | None, subset_dir: Path) -> Path:
    if cfg_dataset is not None:
        path = cfg_dataset
    else:
        try:
            manifest = json.loads((subset_dir / "manifest.json").read_text())
        except (OSError, ValueError):
            raise ClipcovError(f"{subset_dir}/manifest.json is missing or unreadable: pass --dataset") from None
        recorded = (manifest.get("source") or {}).get("dataset_dir")
        if not recorded:
            raise ClipcovError("the manifest records no source dataset: pass --dataset DIR")
        path = Path(recorded)
    if not path.is_dir() or not any(path.glob("*.tar")):
        raise ClipcovError(f"source dataset {path} holds no .tar shard")
    return path


def _shard_keys(tar: Path) -> set[str]:
    parquet = tar.with_suffix(".parquet")
    if parquet.exists():
        t = pq.read_table(parquet, columns=[c for c in ("key", "status") if c in pq.read_schema(parquet).names])
        keys = t.column("key").to_pylist()
        if "status" in t.column_names:
            keys = [k for k, s in zip(keys, t.column("status").to_pylist()) if s == "success"]
        return set(map(str, keys))
    try:
        with tarfile.open(tar, mode="r|*") as tf:
            return {m.name.rsplit("/", 1)[-1].split(".", 1)[0] for m in tf if m.isfile()}
    except (tarfile.TarError, OSError):
        return set()


def make_plan(keys: list[str], dataset_dir: Path, allow_missing: bool) -> ExportPlan:
    wanted = set(keys)
    by_shard: dict[str, frozenset[str]] = {}
    found: set[str] = set()
    for tar in sorted(dataset_dir.glob("*.tar")):
        here = _shard_keys(tar) & wanted
        if here:
            by_shard[tar.stem] = frozenset(here)
            found |= here
    missing = tuple(k for k in keys if k not in found)
    if missing and not allow_missing:
        raise ClipcovError(f"{len(missing)} selected key(s) are not in {dataset_dir}: {', '.join(missing[:5])}"
                           f"{' ...' if len(missing) > 5 else ''} (pass --allow-missing to record them instead)")
    return ExportPlan(tuple(k for k in keys if k in found), by_shard, missing, dataset_dir)
