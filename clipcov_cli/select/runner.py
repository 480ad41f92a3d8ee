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
from clipcov_cli.select.base import EmbeddingSet, RunSettings, Selection
from clipcov_cli.select.keys import key_order
from clipcov_cli.select.methods import METHODS, make_selector
from clipcov_cli.select.profile import process_age, profile
from clipcov_cli.select.reader import open_embeddings
from clipcov_cli.select.summary import class_histograms, dry_run_table, summary_table
from clipcov_cli.select.writer import SELECT_OWNED, selection_table, write_subset
from clipcov_cli.utils.budget import parse_budget
from clipcov_cli.utils.uids import pack_uids, write_uids
from clipcov_cli.utils.overwrite import check_replaceable
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
    engine: str = "local"  # where a method's work runs (ClipCov's classes); the output does not depend on it
    workers: int | None = None
    ray_address: str | None = None
    keep: tuple[str, ...] | None = None  # keys that must be in the subset (select --keep); the method fills the rest
    keep_source: str = ""  # where they came from, for the manifest
    uids_out: Path | None = None  # also write DataComp's uids.npy of the selection here


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
        if cfg.overwrite:
            check_replaceable(cfg.out, SELECT_OWNED, _inputs(cfg.input))


def _inputs(path: Path) -> list:
    """The folders select reads: the input, its embeddings folder and the dataset it was made from."""
    import json

    found = [path]
    for emb in (path, path / "embeddings"):
        try:
            found += [emb, json.loads((emb / "clipcov.json").read_text()).get("dataset_dir")]
            break
        except (OSError, ValueError, AttributeError):
            continue
    return found


def run_select(cfg: SelectConfig) -> SelectResult:
    t0 = time.time()
    if (age := process_age()) is not None:
        profile(f"started {age:.2f} s after the process")
    _check(cfg)
    budget_spec = parse_budget(cfg.budget)
    check_engine(cfg.engine, cfg.ray_address)
    selector = make_selector(cfg.method, RunSettings(cfg.engine, cfg.workers, cfg.ray_address), **dict(cfg.params))
    keep_alive: list = []
    release = _Release(keep_alive)
    failed = True  # until the command's result is ready: then a failed release is the error to report
    warming = None if cfg.dry_run else selector.warm_up()  # e.g. ClipCov: its kernels load while the corpus is read
    with job_phase(f"select: reading {cfg.input}"):
        emb, info = open_embeddings(cfg.input, keep_alive, prepare=None if cfg.dry_run else selector.prepare)
    profile(f"read {time.time() - t0:.2f} s")
    try:
        if selector.needs_labels and not info.has_labels:
            raise ClipcovError(f"{info.root} has no labels/ (clip-retrieval output?): run "
                               f"`clipcov embed --relabel {info.root}` to add pseudo-labels, or use a baseline --method")
        budget = budget_spec.resolve(emb.n_valid)
        diagnostics = _diagnostics(emb, info)
        if cfg.dry_run:
            failed = False
            return SelectResult([], dry_run_table(emb, cfg.budget, budget, info.class_names, diagnostics=diagnostics), None)
        kept = kept_rows(emb, cfg.keep, budget) if cfg.keep is not None else None
        with job_phase(f"select: {cfg.method} choosing {budget:,} of {emb.n_valid:,} rows"):
            sel = selector.select(emb, budget) if kept is None else selector.select_keeping(emb, budget, kept)
        release.start()  # the rows are not read again: their copy goes while the output is written
        _verify(emb, sel, budget)
        before, after = class_histograms(emb, sel)
        manifest = {
            "method": cfg.method,
            "params": selector.params(),
            "notes": list(sel.notes),
            "budget": {"asked": cfg.budget, "met": int(len(sel.indices))},
            "source": {"dataset_dir": info.dataset_dir, "embeddings_dir": str(info.root),
                       "fingerprint": info.fingerprint, "rows": emb.n},
            "class_histogram": {"before": before, "after": after},
            "excluded": {"nan": info.excluded_nan, "zero_norm": info.excluded_zero, "off_norm": info.excluded_off_norm},
            "labels": diagnostics.as_dict() if diagnostics is not None else None,
            "tool_version": __version__,
            "wall_time_s": round(time.time() - t0, 3),
        }
        if kept is not None:
            manifest["keep"] = {"source": cfg.keep_source, "count": int(len(kept))}
        profile(f"selected {time.time() - t0:.2f} s")
        selected = emb.keys[sel.indices].astype(str).tolist()
        uids = pack_uids(selected_uids(selected, info.root, info.dataset_dir)) if cfg.uids_out is not None else None
        with job_phase(f"select: writing {cfg.out}"):
            write_subset(cfg.out, selection_table(emb, sel), manifest, cfg.overwrite)
        if uids is not None:
            write_uids(cfg.uids_out, uids)
        profile(f"written {time.time() - t0:.2f} s")
        table = summary_table(emb, sel, cfg.method, cfg.budget, info.excluded_nan + info.excluded_zero + info.excluded_off_norm,
                              diagnostics=diagnostics)
        result = SelectResult(selected, table, cfg.out, manifest)
        failed = False
        return result
    finally:
        if warming is not None:
            warming()  # the method's loading is over: nothing left running while the process exits
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


def _diagnostics(emb: EmbeddingSet, info):
    """The label diagnostics of the usable rows (None without labels): see ``embed/diagnostics.py``."""
    from clipcov_cli.embed.diagnostics import label_diagnostics, read_label_columns

    if not info.has_labels or emb.pseudo_label is None:
        return None
    _, top, margin = read_label_columns(info.root, info.parts)
    valid = np.asarray(emb.valid)
    return label_diagnostics(np.asarray(emb.pseudo_label)[valid], emb.num_classes,
                             None if top is None else top[valid], None if margin is None else margin[valid])


def kept_rows(emb: EmbeddingSet, keep: tuple[str, ...], budget: int) -> np.ndarray:
    """Row indices (in key order) of the ``--keep`` keys: each must be a valid row, at most ``budget`` of them."""
    row_of = {k: i for i, k in enumerate(np.asarray(emb.keys).astype(str).tolist())}
    unknown = [k for k in keep if k not in row_of]
    if unknown:
        shown = ", ".join(unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        raise ClipcovError(f"{len(unknown)} --keep key(s) are not in the embeddings: {shown}")
    rows = np.unique(np.array([row_of[k] for k in keep], np.int64))
    if len(rows) != len(keep):
        raise ClipcovError("--keep lists a key more than once")
    invalid = [str(emb.keys[i]) for i in rows if not emb.valid[i]]
    if invalid:
        raise ClipcovError(f"{len(invalid)} --keep key(s) have no valid embedding (NaN or zero): {', '.join(invalid[:5])}")
    if len(rows) > budget:
        raise ClipcovError(f"--keep lists {len(rows):,} keys, more than the budget ({budget:,})")
    return rows[key_order(np.asarray(emb.keys)[rows])]  # key order, not row order


def selected_uids(keys: list[str], embeddings_dir: Path, dataset_dir: str | None) -> list[str]:
    """The DataComp uid of every selected key: from the embeddings' metadata (embed keeps the .json's
    scalar fields, uid included), else from the source dataset's parquet files."""
    from clipcov_cli.utils.uids import dataset_uid_parquets, uids_of_keys

    mapping = uids_of_keys(sorted((Path(embeddings_dir) / "metadata").glob("*.parquet")))
    if not mapping and dataset_dir and Path(dataset_dir).is_dir():
        mapping = uids_of_keys(dataset_uid_parquets(Path(dataset_dir)))
    if not mapping:
        raise ClipcovError("--uids-out: the dataset has no 'uid' column (download with --extra-col uid)")
    missing = [k for k in keys if k not in mapping]
    if missing:
        raise ClipcovError(f"--uids-out: {len(missing)} selected key(s) have no uid, e.g. {', '.join(missing[:5])}")
    return [mapping[k] for k in keys]


def _verify(emb: EmbeddingSet, sel: Selection, budget: int) -> None:
    """A method must return exactly ``budget`` distinct valid rows."""
    idx = np.asarray(sel.indices)
    if len(idx) != budget or len(np.unique(idx)) != budget or not emb.valid[idx].all():
        raise RuntimeError(f"method returned {len(idx)} rows ({len(np.unique(idx))} distinct) for a budget of {budget}")
