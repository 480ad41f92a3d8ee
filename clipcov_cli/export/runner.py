"""``run_export``: plan (read only), then three phases of independent units, each resumable:

1. extract, one unit per source shard (``copier``), in parallel;
2. write, one unit per final shard in rank order (``writer``), in parallel;
3. verify, one unit per final shard (``verify``), in parallel, then the whole-export checks;

then ``sizes.json`` and, last, ``manifest.json``. Units run in a process pool (``--workers``);
every unit's output is a deterministic function of the request, so the order in which units finish
(or which ones an interrupted run had finished) never changes the result."""

from __future__ import annotations

import multiprocessing
import os
import shutil
import tarfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

from clipcov_cli import __version__
from clipcov_cli.errors import ClipcovError, JobFailed
from clipcov_cli.export.config import ExportConfig
from clipcov_cli.export.copier import extract_shard, load_index
from clipcov_cli.export.keys import check_keys, fingerprint
from clipcov_cli.export.layout import Layout, publish, shard_name
from clipcov_cli.export.plan import ExportPlan, make_plan, missing_error, read_selection, source_dataset
from clipcov_cli.export.verify import check_totals, verify_shard
from clipcov_cli.export.writer import Item, load_marker, write_shard
from clipcov_cli.utils.atomic import write_json

FORMAT_VERSION = 1
Progress = Callable[[str, int, int], None]  # (phase, units done, units in the phase)


@dataclass(frozen=True)
class ExportResult:
    out_dir: Path
    samples: int
    shards: list[dict]
    missing: tuple[str, ...]
    seconds: float
    already_complete: bool = False


def run_export(cfg: ExportConfig, progress: Progress | None = None) -> ExportResult:
    """Export the selection of ``cfg.subset_dir`` into ``cfg.out``; see the module docstring."""
    t0 = time.perf_counter()
    report = progress or (lambda phase, done, total: None)
    if cfg.shard_size < 1 or cfg.workers < 1:
        raise ClipcovError("--shard-size and --workers must be at least 1")
    keys = requested_keys(cfg)
    dataset = source_dataset(cfg.dataset_dir, cfg.subset_dir)
    layout = Layout(cfg.out)
    fp = fingerprint(keys, cfg.shard_size, str(dataset.resolve()))
    finished = layout.complete(fp)
    if finished is not None:
        return _already_complete(finished, cfg, dataset, t0)
    layout.check(fp, dataset, cfg.overwrite, cfg.subset_dir)  # everything above only reads
    plan = make_plan(keys, dataset, report)
    if plan.missing and not cfg.allow_missing:
        raise missing_error(plan.missing, dataset, plan.unreadable)
    with layout.locked() as lock_fd, _pool(cfg.workers, lock_fd) as pool:
        layout.prepare(fp)
        entries, missing, repeated = _run_phases(cfg, plan, layout, pool, report)
        _finish(_manifest(cfg, plan, entries, missing, repeated, fp), layout)
    layout.lock.unlink(missing_ok=True)
    return ExportResult(layout.out, sum(e["count"] for e in entries), entries, tuple(missing), time.perf_counter() - t0)


def requested_keys(cfg: ExportConfig) -> list[str]:
    """The keys to export, in order: the subset's selection, or the key list (checked alike)."""
    if cfg.keys is None:
        if cfg.subset_dir is None:
            raise ClipcovError("nothing to export: give a SUBSET folder, or --keys FILE|- / --uids FILE with --dataset and --out")
        return read_selection(cfg.subset_dir)
    if cfg.subset_dir is not None:
        raise ClipcovError("give either a SUBSET folder or a key list (--keys / --uids), not both")
    if cfg.dataset_dir is None or cfg.out_dir is None:
        raise ClipcovError("exporting a key list needs --dataset DIR (the source shards) and --out DIR")
    keys = list(cfg.keys)
    if not keys:
        raise ClipcovError("the key list is empty")
    check_keys(keys)
    return keys


def _run_phases(cfg: ExportConfig, plan: ExportPlan, layout: Layout, pool, report: Progress) -> tuple[list[dict], list[str], int]:
    """Extract, write, verify; then the whole-export checks. Returns the shard entries, the missing
    keys and the count of repeated source keys ignored."""
    items, missing, repeated, truncated = _extract(plan, layout, pool, report)
    if missing and not cfg.allow_missing:
        raise missing_error(missing, plan.dataset_dir, plan.unreadable + tuple(f"{t}.tar (truncated)" for t in truncated))
    batches = [items[s: s + cfg.shard_size] for s in range(0, len(items), cfg.shard_size)]
    entries = _write(batches, layout, pool, report)
    _verify(batches, entries, layout, pool, report)
    problem = check_totals(list(plan.keys), missing, [it.key for it in items],
                           layout.extra_tars({e["shard"] for e in entries}))
    if problem:
        raise JobFailed(f"export check failed: {problem}")
    return entries, missing, repeated


def _finish(manifest: dict, layout: Layout) -> None:
    """sizes.json, usual permissions, then manifest.json last (the export is complete); drop .work."""
    write_json(layout.sizes, {e["shard"]: e["count"] for e in manifest["shards"]})
    for path in [*(layout.out / e["shard"] for e in manifest["shards"]), layout.sizes]:
        publish(path)
    write_json(layout.manifest, manifest)
    publish(layout.manifest)
    shutil.rmtree(layout.work, ignore_errors=True)


def _already_complete(manifest: dict, cfg: ExportConfig, dataset: Path, t0: float) -> ExportResult:
    missing = tuple(manifest.get("missing", []))
    if missing and not cfg.allow_missing:
        raise missing_error(missing, dataset)
    return ExportResult(cfg.out, int(manifest["count"]), manifest["shards"], missing, time.perf_counter() - t0, True)


def _extract(plan: ExportPlan, layout: Layout, pool, report: Progress) -> tuple[list[Item], list[str], int, list[str]]:
    """Phase 1. Returns the samples found, in rank order, the selected keys not found, the count of
    repeated keys ignored in the source and the source shards found truncated."""
    jobs = {stem: (plan.dataset_dir / f"{stem}.tar", keys, layout.src) for stem, keys in sorted(plan.by_shard.items())}
    indexes = _run_units(pool, extract_shard, jobs, "extract", report, "source shard")
    rank = {k: r for r, k in enumerate(plan.keys)}
    slots: list[Item | None] = [None] * len(plan.keys)
    repeated, truncated = 0, []
    for stem in sorted(indexes):
        idx = load_index(indexes[stem])
        repeated += idx["repeated"]
        if idx.get("truncated"):
            truncated.append(stem)
        for key, off, length, exts, payload in zip(idx["keys"], idx["offsets"], idx["lengths"], idx["exts"], idx["payload"]):
            slots[rank[key]] = Item(key, stem, off, length, tuple(exts), payload)
    missing = [k for k, it in zip(plan.keys, slots) if it is None]
    return [it for it in slots if it is not None], missing, repeated, truncated


def _write(batches: list[list[Item]], layout: Layout, pool, report: Progress) -> list[dict]:
    """Phase 2: the final shards not finished by an earlier run."""
    entries: dict[int, dict] = {}
    jobs = {}
    for n, batch in enumerate(batches):
        done = load_marker(layout.shard_marker(n), layout.shard(n), batch)
        if done is not None:
            entries[n] = done
        else:
            jobs[n] = (layout.shard(n), layout.shard_marker(n), batch, layout.src)
    entries.update(_run_units(pool, write_shard, jobs, "write", report, "shard", already=len(entries), total=len(batches)))
    return [entries[n] for n in range(len(batches))]


def _verify(batches: list[list[Item]], entries: list[dict], layout: Layout, pool, report: Progress) -> None:
    """Phase 3: a shard that fails is removed with its marker, so that a re-run writes it again."""
    jobs = {n: (layout.shard(n), entries[n], batch) for n, batch in enumerate(batches)}
    reasons = _run_units(pool, verify_shard, jobs, "verify", report, "shard")
    bad = {n: r for n, r in reasons.items() if r}
    for n in bad:
        layout.shard(n).unlink(missing_ok=True)
        layout.shard_marker(n).unlink(missing_ok=True)
    if bad:
        first = bad[min(bad)]
        raise JobFailed(f"{len(bad)} exported shard(s) failed verification ({first}); they were removed: re-run to write them again")


def _run_units(pool, fn, jobs: dict, phase: str, report: Progress, unit: str, already: int = 0, total: int | None = None) -> dict:
    """Run ``fn(*args)`` for every job; all units run even if some fail, then failures raise JobFailed."""
    total = len(jobs) + already if total is None else total
    results, failed = {}, {}
    report(phase, already, total)
    for n, (name, outcome) in enumerate(_outcomes(pool, fn, jobs), start=already + 1):
        if isinstance(outcome, Exception):
            failed[name] = outcome
        else:
            results[name] = outcome
        report(phase, n, total)
    if failed:
        name = min(failed)
        raise JobFailed(f"{len(failed)} {unit}(s) failed in the {phase} phase, e.g. {name}: "
                        f"{type(failed[name]).__name__}: {failed[name]}".splitlines()[0] + " (re-run to retry them)")
    return results


# a unit's failure that a re-run may get past (bad or vanished source data, a killed worker); any
# other exception is a bug and propagates, whatever the worker count
UNIT_FAILURES = (OSError, ValueError, EOFError, KeyError, tarfile.TarError, BrokenProcessPool)


def _outcomes(pool, fn, jobs: dict) -> Iterator[tuple]:
    if pool is None:
        for name, args in jobs.items():
            try:
                yield name, fn(*args)
            except UNIT_FAILURES as exc:
                yield name, exc
        return
    futures = {pool.submit(fn, *args): name for name, args in jobs.items()}
    for fut in as_completed(futures):
        try:
            yield futures[fut], fut.result()
        except UNIT_FAILURES as exc:  # reported with the others
            yield futures[fut], exc


@contextmanager
def _pool(workers: int, lock_fd: int) -> Iterator[ProcessPoolExecutor | None]:
    if workers <= 1:
        yield None
        return
    ctx = multiprocessing.get_context()
    inherited = lock_fd if ctx.get_start_method() == "fork" else -1
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_drop_lock, initargs=(inherited,)) as pool:
        yield pool


def _drop_lock(fd: int) -> None:
    """In a forked worker: close the inherited lock, so that if the parent is killed the lock goes
    with it and a re-run can start (a worker still finishing a unit writes the same bytes)."""
    if fd >= 0:
        os.close(fd)


def _manifest(cfg: ExportConfig, plan: ExportPlan, entries: list[dict], missing: list[str], repeated: int, fp: str) -> dict:
    """Contract 3's shards/manifest.json. No wall times: the same request gives the same manifest."""
    return {
        "format_version": FORMAT_VERSION,
        "count": sum(e["count"] for e in entries),
        "selected": len(plan.keys),
        "missing": list(missing),
        "shards": entries,
        "shard_size": cfg.shard_size,
        "fingerprint": fp,
        "source": {"dataset_dir": str(plan.dataset_dir.resolve()),
                   "subset_dir": str(cfg.subset_dir.resolve()) if cfg.subset_dir is not None else None,
                   **({"keys": cfg.keys_source or "a key list"} if cfg.keys is not None else {}),
                   "repeated_keys_ignored": repeated},
        "tool_version": __version__,
        "shards_pattern": _brace_pattern(len(entries)),  # for --train-data OUT/{00000..00004}.tar
    }


def _brace_pattern(n: int) -> str | None:
    if n == 0:
        return None
    first, last = shard_name(0).removesuffix(".tar"), shard_name(n - 1).removesuffix(".tar")
    return f"{first}.tar" if n == 1 else f"{{{first}..{last}}}.tar"
