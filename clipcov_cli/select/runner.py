"""`select` orchestration: read embeddings, run one method, write the subset, summarize."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rich.table import Table

from clipcov_cli import __version__
from clipcov_cli.distribute.factory import check_engine
from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, Selection
from clipcov_cli.select.methods import METHODS, make_selector
from clipcov_cli.select.profile import process_age, profile, worker_count
from clipcov_cli.select.reader import open_embeddings
from clipcov_cli.select.summary import class_histograms, dry_run_table, summary_table
from clipcov_cli.select.writer import selection_table, write_subset
from clipcov_cli.utils.budget import parse_budget
from clipcov_cli.utils.progress import job_phase


@dataclass(frozen=True)
class SelectConfig:
    input: Path
    out: Path | None
    budget: str
    method: str = "clipcov"
    params: tuple[tuple[str, object], ...] = ()  # the method's parameters (name, value)
    dry_run: bool = False
    overwrite: bool = False
    engine: str = "local"  # where per-class work runs (ClipCov); the output does not depend on it
    workers: int | None = None
    ray_address: str | None = None


@dataclass(frozen=True)
class SelectResult:
    keys: list[str]
    table: Table
    out: Path | None
    manifest: dict = field(default_factory=dict)


def _check(cfg: SelectConfig) -> None:
    if cfg.method not in METHODS:
        raise ClipcovError(f"unknown method {cfg.method!r}: use one of {', '.join(METHODS)}")
    if not cfg.dry_run:
        if cfg.out is None:
            raise ClipcovError("--out is required (or use --dry-run)")
        if cfg.out.exists() and not cfg.overwrite:
            raise ClipcovError(f"{cfg.out} exists: choose another --out or pass --overwrite")


def run_select(cfg: SelectConfig) -> SelectResult:
    t0 = time.time()
    if (age := process_age()) is not None:
        profile(f"started {age:.2f} s after the process")
    _check(cfg)
    budget_spec = parse_budget(cfg.budget)
    check_engine(cfg.engine, cfg.ray_address)
    selector = make_selector(cfg.method, **dict(cfg.params), engine=cfg.engine, workers=cfg.workers,
                             ray_address=cfg.ray_address)
    workers = worker_count(cfg.workers)
    keep_alive: list = []
    release = _Release(keep_alive)
    failed = True  # until the command's result is ready: then a failed release is the error to report
    if not cfg.dry_run:
        selector.warm_up()  # e.g. ClipCov: torch and the compiled kernels load while the corpus is read
    # Ray units read the parts themselves: no class-major copy for them (None: decided by memory)
    with job_phase(f"select: reading {cfg.input}"):
        emb, info = open_embeddings(cfg.input, keep_alive, group_by_label=cfg.method == "clipcov" and not cfg.dry_run,
                                    workers=workers, class_copy=False if cfg.engine == "ray" else None,
                                    map_parts=cfg.engine != "ray")
    profile(f"read {time.time() - t0:.2f} s")
    try:
        if cfg.method == "clipcov" and not info.has_labels:
            raise ClipcovError(f"{info.root} has no labels/ (clip-retrieval output?): run "
                               f"`clipcov embed --relabel {info.root}` to add pseudo-labels, or use a baseline --method")
        budget = budget_spec.resolve(emb.n_valid)
        if cfg.dry_run:
            failed = False
            return SelectResult([], dry_run_table(emb, cfg.budget, budget, info.class_names), None)
        with job_phase(f"select: {cfg.method} choosing {budget:,} of {emb.n_valid:,} rows"):
            sel = selector.select(emb, budget)
        release.start()  # the rows are not read again: their copy goes while the output is written
        _verify(emb, sel, budget)
        before, after = class_histograms(emb, sel)
        manifest = {
            "method": cfg.method,
            "params": selector.params(),
            "notes": list(getattr(selector, "notes", [])),
            "budget": {"asked": cfg.budget, "met": int(len(sel.indices))},
            "source": {"dataset_dir": info.dataset_dir, "embeddings_dir": str(info.root),
                       "fingerprint": info.fingerprint, "rows": emb.n},
            "class_histogram": {"before": before, "after": after},
            "excluded": {"nan": info.excluded_nan, "zero_norm": info.excluded_zero},
            "tool_version": __version__,
            "wall_time_s": round(time.time() - t0, 3),
        }
        profile(f"selected {time.time() - t0:.2f} s")
        with job_phase(f"select: writing {cfg.out}"):
            write_subset(cfg.out, selection_table(emb, sel), manifest, cfg.overwrite)
        profile(f"written {time.time() - t0:.2f} s")
        table = summary_table(emb, sel, cfg.method, cfg.budget, info.excluded_nan + info.excluded_zero)
        result = SelectResult(emb.keys[sel.indices].astype(str).tolist(), table, cfg.out, manifest)
        failed = False
        return result
    finally:
        release.finish(raise_error=not failed)  # else the error under way is the one to report
        profile(f"temporary files and maps dropped {time.time() - t0:.2f} s")


class _Release:
    """Removes the reader's temporary files and maps (``cleanup()`` of each), in a background thread
    once the method is done with the rows: deleting a class-major copy of tens of GB takes seconds
    (the file system frees, and may discard, every block), which then overlap writing the output."""

    def __init__(self, items: list) -> None:
        self.items = items
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def start(self) -> None:
        if self.thread is None:
            self.thread = threading.Thread(target=self._run, name="clipcov-release")
            self.thread.start()

    def _run(self) -> None:
        try:
            for item in self.items:
                item.cleanup()
        except BaseException as exc:  # noqa: BLE001 - re-raised by finish(), in the caller's thread
            self.error = exc

    def finish(self, raise_error: bool = True) -> None:
        """Wait for the release (or run it here if it was not started); re-raise its error."""
        if self.thread is None:
            self._run()
        else:
            self.thread.join()
        if self.error is not None and raise_error:
            raise self.error


def _verify(emb: EmbeddingSet, sel: Selection, budget: int) -> None:
    """A method must return exactly ``budget`` distinct valid rows."""
    idx = np.asarray(sel.indices)
    if len(idx) != budget or len(np.unique(idx)) != budget or not emb.valid[idx].all():
        raise RuntimeError(f"method returned {len(idx)} rows ({len(np.unique(idx))} distinct) for a budget of {budget}")
