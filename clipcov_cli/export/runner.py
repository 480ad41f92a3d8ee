"""`export` orchestration: plan, extract in parallel (phase 1), write final shards (phase 2),
verify, manifest last. Every phase resumes from its markers."""

from __future__ import annotations

import shutil
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clipcov_cli import __version__
from clipcov_cli.errors import ClipcovError
from clipcov_cli.export.config import ExportConfig
from clipcov_cli.export.copier import extract_shard
from clipcov_cli.export.plan import make_plan, read_selection, source_dataset
from clipcov_cli.export.verify import verify_export
from clipcov_cli.export.writer import index_members, write_shard
from clipcov_cli.utils.atomic import write_json


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    samples: int
    shards: list[dict]
    missing: tuple[str, ...]
    seconds: float
    already_complete: bool = False


def run_export(cfg: ExportConfig, progress: Callable[[int, int], None] = lambda done, total: None) -> ExportResult:
    t0 = time.time()
    if cfg.shard_size < 1 or cfg.workers < 1:
        raise ClipcovError("--shard-size and --workers must be at least 1")
    keys = read_selection(cfg.subset_dir)
    dataset = source_dataset(cfg.dataset_dir, cfg.subset_dir)
    out = cfg.out
    manifest_path = out / "manifest.json"
    if manifest_path.exists():
        import json

        m = json.loads(manifest_path.read_text())
        if m.get("count") == len(keys) - len(m.get("missing", [])):
            return ExportResult(out, m["count"], m["shards"], tuple(m.get("missing", [])), time.time() - t0, True)
    plan = make_plan(keys, dataset, cfg.allow_missing)
    work = out / ".work"
    (work / "src").mkdir(parents=True, exist_ok=True)
    for stale in [*out.glob(".*.tmp"), *work.rglob(".*.tmp")]:  # left by an interrupted run
        stale.unlink()
    jobs = [(dataset / f"{stem}.tar", plan.by_shard[stem], work / "src") for stem in sorted(plan.by_shard)]
    done = 0
    if cfg.workers > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=cfg.workers) as pool:
            intermediates = []
            for path in pool.map(extract_shard, *zip(*jobs)):
                intermediates.append(path)
                done += 1
                progress(done, len(jobs) + _n_shards(plan.keys, cfg.shard_size))
    else:
        intermediates = []
        for job in jobs:
            intermediates.append(extract_shard(*job))
            done += 1
            progress(done, len(jobs) + _n_shards(plan.keys, cfg.shard_size))
    index = index_members(intermediates)
    handles: dict = {}
    entries = []
    try:
        for i, s in enumerate(range(0, len(plan.keys), cfg.shard_size)):
            entries.append(write_shard(out, i, list(plan.keys[s: s + cfg.shard_size]), index, handles))
            done += 1
            progress(done, len(jobs) + _n_shards(plan.keys, cfg.shard_size))
    finally:
        for f in handles.values():
            f.close()
    verify_export(out, plan.keys, entries)
    manifest = {"format_version": 1, "count": len(plan.keys), "shards": entries, "missing": list(plan.missing),
                "source": {"dataset_dir": str(dataset.resolve()), "subset_dir": str(cfg.subset_dir.resolve())},
                "shard_size": cfg.shard_size, "tool_version": __version__}
    write_json(manifest_path, manifest)  # last: the export is complete
    shutil.rmtree(work, ignore_errors=True)
    return ExportResult(out, len(plan.keys), entries, plan.missing, time.time() - t0)


def _n_shards(keys, size: int) -> int:
    return -(-len(keys) // size)
