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
    shards: tuple[Path | str, ...]  # shard files, or pipe: URLs (--no-copy)
    samples: int
    source: str  # what the input was, for the report
    counts: tuple[int, ...] | None = None  # samples per shard (same order), when known

    def shard_counts(self) -> tuple[int, ...]:
        """Samples per shard: the recorded counts, else a scan of the shards."""
        return self.counts if self.counts is not None else tuple(_count_by_scan([t]) for t in self.shards)


def _count_from_stats(folder: Path) -> int | None:
    stats = sorted(folder.glob("*_stats.json"))
    if not stats or len(stats) != len(list(folder.glob("*.tar"))):
        return None
    return sum(int(json.loads(p.read_text()).get("successes", 0)) for p in stats)


def _counts_recorded(folder: Path, tars: list[Path]) -> tuple[int, ...] | None:
    """Per-shard counts from export's sizes.json, else img2dataset's {shard}_stats.json files."""
    sizes = folder / "sizes.json"
    if sizes.exists():
        table = json.loads(sizes.read_text())
        if all(t.name in table for t in tars):
            return tuple(int(table[t.name]) for t in tars)
    stats = [folder / f"{t.stem}_stats.json" for t in tars]
    if all(p.exists() for p in stats):
        return tuple(int(json.loads(p.read_text()).get("successes", 0)) for p in stats)
    return None


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
    counts = _counts_recorded(folder, tars)
    if counts is not None and sum(counts) != count:
        counts = None  # the records disagree: scan when the epoch plan needs them
    return TrainData(tuple(tars), int(count), source, counts)


def streamed_subset(subset: Path, run_dir: Path) -> TrainData:
    """A subset that was not exported, read from its source shards as it trains (``--no-copy``):
    one ``pipe:`` URL per source shard holding selected keys, each streaming only those."""
    from clipcov_cli.export.plan import make_plan, missing_error, read_selection, source_dataset
    from clipcov_cli.pretrain.stream import stream_url

    dataset = source_dataset(None, subset)
    plan = make_plan(read_selection(subset), dataset)
    if plan.missing:
        raise missing_error(plan.missing, dataset, plan.unreadable)
    folder = run_dir / "stream-keys"
    folder.mkdir(parents=True, exist_ok=True)
    urls, counts = [], []
    for stem in sorted(plan.by_shard):
        keys_file = folder / f"{stem}.txt"
        keys_file.write_text("".join(k + "\n" for k in sorted(plan.by_shard[stem])))
        urls.append(stream_url(dataset / f"{stem}.tar", keys_file))
        counts.append(len(plan.by_shard[stem]))
    return TrainData(tuple(urls), sum(counts), f"subset {subset} (selected keys streamed from {dataset}, no copy)",
                     tuple(counts))


def resolve_input(path: Path, run_dir: Path, no_copy: bool = False) -> TrainData:
    """An exported subset (``SUBSET/shards``), a subset not exported (exported into RUN/data, or
    with ``no_copy`` streamed from its source shards), or a WebDataset folder."""
    if not path.exists():
        raise ClipcovError(f"{path} does not exist")
    if (path / "selection.parquet").exists():
        if (path / "shards" / "manifest.json").exists():
            return shards_folder(path / "shards", f"exported subset {path}")
        if no_copy:
            return streamed_subset(path, run_dir)
        from clipcov_cli.export import ExportConfig, run_export

        res = run_export(ExportConfig(subset_dir=path, out_dir=run_dir / "data"))
        return shards_folder(res.out_dir, f"subset {path} (selected keys streamed from its source into {res.out_dir})")
    if path.is_file() and path.suffix == ".tar":
        n = _count_by_scan([path])
        return TrainData((path,), n, f"shard {path}", (n,))
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
