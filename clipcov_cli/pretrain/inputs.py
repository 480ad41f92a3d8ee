"""Resolve what `pretrain` trains on: an exported subset, any WebDataset folder, or a subset that
was not exported (then it is exported into the run folder first, keeping only the selected keys)."""

from __future__ import annotations

import json
import tarfile
from dataclasses import dataclass
from pathlib import Path

from clipcov_cli.errors import ClipcovError


@dataclass(frozen=True)
class TrainData:
    shards: tuple[Path, ...]
    samples: int
    source: str  # what the input was, for the report


def _count_from_stats(folder: Path) -> int | None:
    stats = sorted(folder.glob("*_stats.json"))
    if not stats or len(stats) != len(list(folder.glob("*.tar"))):
        return None
    return sum(int(json.loads(p.read_text()).get("successes", 0)) for p in stats)


def _count_by_scan(tars: list[Path]) -> int:
    n = 0
    for t in tars:
        keys = set()
        with tarfile.open(t, mode="r|*") as tf:
            for m in tf:
                name = m.name.rsplit("/", 1)[-1]
                if m.isfile() and name.lower().endswith((".jpg", ".jpeg", ".png", ".webp")):
                    keys.add(name.split(".", 1)[0])
        n += len(keys)
    return n


def shards_folder(folder: Path, source: str) -> TrainData:
    tars = sorted(folder.glob("*.tar"))
    if not tars:
        raise ClipcovError(f"{folder} holds no .tar shard")
    manifest = folder / "manifest.json"
    count = None
    if manifest.exists():
        count = json.loads(manifest.read_text()).get("count")
    if count is None:
        count = _count_from_stats(folder)
    if count is None:
        count = _count_by_scan(tars)
    if count == 0:
        raise ClipcovError(f"{folder} holds no sample with an image")
    return TrainData(tuple(tars), int(count), source)


def resolve_input(path: Path, run_dir: Path) -> TrainData:
    """An exported subset (``SUBSET/shards``), a subset not exported (exported into RUN/data), or a
    WebDataset folder."""
    if not path.exists():
        raise ClipcovError(f"{path} does not exist")
    if (path / "selection.parquet").exists():
        if (path / "shards" / "manifest.json").exists():
            return shards_folder(path / "shards", f"exported subset {path}")
        from clipcov_cli.export import ExportConfig, run_export

        res = run_export(ExportConfig(subset_dir=path, out_dir=run_dir / "data"))
        return shards_folder(res.out_dir, f"subset {path} (selected keys streamed from its source into {res.out_dir})")
    if path.is_file() and path.suffix == ".tar":
        return TrainData((path,), _count_by_scan([path]), f"shard {path}")
    return shards_folder(path, f"WebDataset folder {path}")


def keyed_input(path: Path, run_dir: Path, keys: tuple[str, ...], keys_source: str = "") -> TrainData:
    """Given keys of a dataset folder (or of a subset's source dataset): those samples, exported into RUN/data."""
    from clipcov_cli.export import ExportConfig, run_export
    from clipcov_cli.export.plan import source_dataset

    if not path.exists():
        raise ClipcovError(f"{path} does not exist")
    dataset = source_dataset(None, path) if (path / "selection.parquet").exists() else path
    res = run_export(ExportConfig(subset_dir=None, dataset_dir=dataset, out_dir=run_dir / "data", keys=keys,
                                  keys_source=keys_source))
    return shards_folder(res.out_dir, f"{len(keys):,} keys of {dataset} ({keys_source or 'a key list'}), exported into {res.out_dir}")


def default_run_dir(data: Path, recipe: str, keys: tuple[str, ...] | None = None) -> Path:
    """Where `pretrain DATA` trains without --out: DATA/runs/RECIPE (a shard file: beside it, in
    runs/STEM-RECIPE); with a key list, DATA/runs/RECIPE-keys-HASH (8 hex digits of the keys' sha256),
    so that another key list never resumes this one's run."""
    import hashlib

    base = data / "runs" / recipe if not data.is_file() else data.parent / "runs" / f"{data.stem}-{recipe}"
    if keys is None:
        return base
    digest = hashlib.sha256("".join(k + "\n" for k in keys).encode()).hexdigest()[:8]
    return base.with_name(f"{base.name}-keys-{digest}")
