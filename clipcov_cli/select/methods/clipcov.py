"""ClipCov: the exact greedy of the spec, class by class.

One pass over the embeddings (``clipcov/scan.py``) flags invalid rows, sums the corpus and copies the
rows into class-major order; each class is then a unit of work (``clipcov/units.py``: its terms and
its greedy sequence) run through the distributor seam (local threads or Ray tasks), and the
per-class sequences are merged by gain (``clipcov/greedy.py``). Never materializes an n_k x n_k
matrix (exact thresholded r is computed in row blocks); memory is O(n) plus the classes in flight.

Order independence: a unit sees its class' rows in ascending *key* order (the rows are read in
example order and permuted, unless they already are in key order), so every per-class number (terms,
float32 products of exact r, the greedy, its ties: "lower position" is "lower key") is computed from
the same arrays whatever order the corpus' rows come in; the corpus sums are exact, and the merge
breaks ties across classes by key rank. The same rows give the same selection, bit for bit.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import nullcontext
from dataclasses import InitVar, dataclass, field, replace
from typing import Callable, ClassVar, ContextManager

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, PartFiles, Preparation, RunSettings, Selection, Selector
from clipcov_cli.select.clipcov.blas import blas_threads
from clipcov_cli.select.clipcov.greedy import merge_sequences
from clipcov_cli.select.clipcov.lazy_kernel import stat as kernel_stat
from clipcov_cli.select.clipcov.imatmul import ThreadShare, backend, set_torch_threads
from clipcov_cli.select.clipcov.scan import GroupedRows, NpyPart, PartsScan, RowBuffers, group_from_arrays
from clipcov_cli.select.clipcov.units import ClassResult, ClassUnit, GroupedSource, PartsSource, run_class_unit
from clipcov_cli.select.keys import key_order
from clipcov_cli.select.profile import profile, worker_count

R_MODES = ("auto", "exact", "mean")
# auto: exact thresholded r while sum_k n_k^2 d stays under this many multiply-adds (a few seconds on 2 cores)
AUTO_EXACT_MACS = 1e11
# a class' sequence is first computed to QUOTA_FACTOR x its share of the budget (+16); the merge
# re-runs a class that runs out with 25% more. Greedy cost grows with the square of the quota.
QUOTA_FACTOR = 1.1
# large classes run on local threads keep their greedy state for the merge to extend in place
STATE_QUOTA_FACTOR = 1.0  # their first quota: just their share (+16); extending them costs no recomputation
STATE_MIN_ROWS = 20_000
STATE_MEMORY_SHARE = 0.25
STATE_MEMORY_MAX = 4 << 30
NO_THRESHOLD_BELOW = -1.01  # |<v,t>| <= ~1 for unit float16 rows: tau below this thresholds nothing


def _stateful_classes(blocks, d: int) -> set[int]:
    """The largest classes whose greedy state (rows as float16 plus ~3 rows of state per pick) fits in
    STATE_MEMORY_SHARE of the available memory, at most STATE_MEMORY_MAX bytes."""
    from clipcov_cli.select.clipcov.scan import available_memory

    budget = min(STATE_MEMORY_SHARE * available_memory(), STATE_MEMORY_MAX)
    out, used = set(), 0.0
    for b in sorted(blocks, key=lambda b: -len(b.rows)):
        need = len(b.rows) * d * 2 * 2 * 1.5
        if len(b.rows) < STATE_MIN_ROWS or used + need > budget:
            break
        out.add(b.k)
        used += need
    return out


def resolve_r_mode(r_mode: str, tau: float, sizes: np.ndarray, d: int) -> str:
    """The r computation actually used: 'mean' is exact when tau thresholds nothing."""
    if tau < NO_THRESHOLD_BELOW:
        return "mean"
    if r_mode == "auto":
        return "exact" if float(np.sum(sizes.astype(np.float64) ** 2)) * d <= AUTO_EXACT_MACS else "mean"
    return r_mode


class _ClassSequence:
    """A class' greedy sequence as the merge sees it.

    Large classes run locally keep their greedy's state, so the merge extends them in place, a few
    picks at a time (their first quota is just their share of the budget). Other classes keep only
    (picks, gains): extending re-runs the class' unit with 25% more (deterministic, same prefix), so
    memory holds one such class at a time per worker; their first quota has 10% headroom so that
    this is rare."""

    def __init__(self, unit: ClassUnit, result: ClassResult, index: np.ndarray, rerun: Callable) -> None:
        self.unit, self.index, self._rerun = unit, index, rerun
        self.m = len(index)
        self.restarts = 0
        self.extensions = 0
        self._state = result.state
        self.picks: list[int] = result.picks.tolist()
        self.gains: list[float] = result.gains.tolist()

    @property
    def exhausted(self) -> bool:
        return len(self.picks) >= self.m

    def chunk(self) -> int:
        n = len(self.picks)
        return max(64, math.ceil(n / 64)) if self._state is not None else max(16, math.ceil(n / 4))

    def extend(self, count: int) -> None:
        if self._state is not None:
            self.extensions += 1
            self._state.extend(count)
            self.picks, self.gains = self._state.picks, self._state.gains
            return
        self.restarts += 1
        self.unit = self.unit.with_quota(min(self.m, len(self.picks) + count))
        res = self._rerun(self.unit)
        self.picks, self.gains = res.picks.tolist(), res.gains.tolist()

    def release(self) -> None:
        self._state = None


@dataclass(frozen=True)
class ClipCovSelector(Selector):
    """The method's parameters; where it runs is ``run`` (``ClipCovSelector(workers=2)`` is short for
    ``ClipCovSelector(run=RunSettings(workers=2))``, and likewise ``engine`` and ``ray_address``)."""

    name: ClassVar[str] = "clipcov"
    needs_labels: ClassVar[bool] = True
    alpha: float = 2.0
    beta: float = 0.5
    gamma: float = 1.0
    tau: float = 0.0
    r_mode: str = "auto"
    run: RunSettings = field(default_factory=RunSettings, compare=False)
    engine: InitVar[str | None] = None
    workers: InitVar[int | None] = None
    ray_address: InitVar[str | None] = None

    def __post_init__(self, engine: str | None, workers: int | None, ray_address: str | None) -> None:
        if self.r_mode not in R_MODES:
            raise ClipcovError(f"unknown --r-mode {self.r_mode!r}: use one of {', '.join(R_MODES)}")
        given = {k: v for k, v in (("engine", engine), ("workers", workers), ("ray_address", ray_address)) if v is not None}
        if given:
            object.__setattr__(self, "run", replace(self.run, **given))

    def params(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "tau": self.tau, "r_mode": self.r_mode}

    @property
    def _remote(self) -> bool:
        return self.run.engine != "local"

    def _workers(self) -> int:
        return worker_count(self.run.workers)

    def warm_up(self) -> Callable[[], None] | None:
        """torch and the compiled kernels load in a background thread (about 2 s) while the caller
        reads the corpus; a failure there is left for the real units to report. Returns the wait for
        it (not left compiling while the interpreter exits)."""
        if self._remote:
            return None
        from clipcov_cli.select.clipcov.units import warm_up

        thread = threading.Thread(target=_quietly, args=(warm_up,), name="clipcov-warm-up", daemon=True)
        thread.start()
        return lambda: thread.join(timeout=60)

    def prepare(self, parts: PartFiles) -> Preparation:
        """The one pass over the parts (``clipcov/scan.py``) while the reader reads the tables. Ray
        units read the parts themselves: no class-major copy and no memory maps for them."""
        copy = False if self._remote else None  # None: decided by the available memory
        return start_grouping(parts, self._workers(), copy=copy, map_parts=not self._remote)

    def select(self, embeddings: EmbeddingSet, budget: int) -> Selection:
        return self._select(embeddings, budget, None)

    def select_keeping(self, embeddings: EmbeddingSet, budget: int, kept: np.ndarray) -> Selection:
        """The greedy started from the kept rows as already selected: each kept row is forced first in
        its class' greedy (its score raised by ``force_offset()``, above any gain), so the classes'
        redundancy sums hold the kept rows exactly before the first free pick, and every later gain is
        ``gain(j | kept + picks so far)`` exactly, as a greedy seeded with them would compute it. The
        merge puts all kept rows first; their recorded gain is their marginal gain in the order they
        were added (the offset taken back off)."""
        kept = np.asarray(kept, np.int64)
        sel = self._select(embeddings, budget, kept)
        head = np.asarray(sel.indices[: len(kept)])
        if not np.array_equal(np.sort(head), np.sort(kept)):
            raise RuntimeError("the kept rows did not come first in ClipCov's merged sequence")
        score = np.asarray(sel.score, np.float64).copy()
        score[: len(kept)] -= self.force_offset()
        return replace(sel, score=score)

    def force_offset(self) -> float:
        """Above every possible gain difference: |a_j| <= 2 + |alpha| + |beta| + 2|gamma| and a redundancy
        term is within [-2, 2]; a power of two, so that adding it and taking it back off loses little."""
        spread = 2 * (2 + abs(self.alpha) + abs(self.beta) + 2 * abs(self.gamma)) + 4
        return float(2.0 ** math.ceil(math.log2(16 * spread)))

    def _select(self, embeddings: EmbeddingSet, budget: int, kept: np.ndarray | None) -> Selection:
        if embeddings.pseudo_label is None or embeddings.label_sim is None:
            raise ClipcovError("ClipCov needs pseudo-labels: run `clipcov embed --relabel` on the embeddings folder first")
        t0 = time.perf_counter()
        with self._grouped(embeddings) as grouped:
            plan = _plan(embeddings, grouped, kept)
            r_mode = resolve_r_mode(self.r_mode, self.tau, np.array([len(b.rows) for b in plan.blocks], np.int64),
                                    embeddings.d)
            if self._remote and not grouped.source.parts:
                raise ClipcovError("--engine ray reads the rows from the embeddings folder's parts: open it from a folder")
            stateful = set() if self._remote else _stateful_classes(plan.blocks, embeddings.d)
            share = ThreadShare(1)  # torch threads of the local workers (one each until a single unit is left)
            run = self._run(self._units(plan, budget, r_mode, stateful, share), plan, budget, share)
        notes = [f"r computed with the '{r_mode}' method"]
        if any(kernel_stat(s, "batches") > 0 for s in run.stats):  # some class screened batches
            notes.append(f"int8 screening products: {backend()}")  # torch-int8, or the slower blas-float
        _profile_run(run, t0, len(stateful))
        idx = plan.by_key[run.merged.index]  # the merge's index is the key rank
        terms = {"class": plan.labels[idx]}
        terms.update({name: arr[idx] for name, arr in run.cols.items()})
        return Selection(indices=idx, score=run.merged.gain, terms=terms, all_scores=run.cols["a"],
                         notes=tuple(notes), stats=tuple(run.stats) + (np.array([run.restarts], np.int64),))

    def _grouped(self, embeddings: EmbeddingSet) -> ContextManager[GroupedRows]:
        """The reader's class-major pass (``prepare``: closed by the reader's caller, its owner), or the
        same pass, in memory, for a caller holding arrays (closed here, when the selection is done)."""
        if isinstance(embeddings.prepared, GroupedRows):
            return nullcontext(embeddings.prepared)
        labels = np.asarray(embeddings.pseudo_label).astype(np.int64)
        return group_from_arrays(embeddings.img, embeddings.txt, labels, int(labels.max()) + 1, workers=self._workers())

    def _units(self, plan: "_Plan", budget: int, r_mode: str, stateful: set[int], share: ThreadShare) -> list[ClassUnit]:
        """One unit of work per class with valid rows, largest first (the longest unit starts first)."""
        buffers = RowBuffers()  # the local workers' reused row buffers (for this selection only)
        units = []
        for b in plan.blocks:
            factor = STATE_QUOTA_FACTOR if b.k in stateful else QUOTA_FACTOR
            by_key_k = plan.index_of[b.k]
            forced = np.flatnonzero(plan.forced[by_key_k]) if plan.forced is not None else None  # key-order positions
            quota = min(len(b.rows), math.ceil(factor * budget * len(b.rows) / plan.n_valid) + 16 +
                        len(forced if forced is not None else ()))
            source = PartsSource(plan.grouped.source.parts, b.rows) if self._remote else \
                GroupedSource(plan.grouped, b.k, b.keep, None if b.k in stateful else buffers)  # a kept state keeps its rows
            units.append(ClassUnit(b.k, quota, self.alpha, self.beta, self.gamma, self.tau, r_mode, plan.grouped.sum_v,
                                   plan.grouped.sum_t, plan.n_valid, plan.label_sim[by_key_k].astype(np.float32), source,
                                   keep_state=b.k in stateful, threads=ThreadShare(1) if self._remote else share,
                                   forced=forced if forced is not None and len(forced) else None,
                                   force=self.force_offset(), order=b.perm))
        units.sort(key=lambda u: -len(u.label_sim))
        return units

    def _run(self, units: list[ClassUnit], plan: "_Plan", budget: int, share: ThreadShare) -> "_Run":
        """The units through the distributor, then the merge of their sequences by gain. Local threads
        get one BLAS / torch thread each (the classes are the parallelism; a multi-threaded BLAS on the
        kernel's small products is several times slower); Ray tasks get 1 CPU each."""
        from clipcov_cli.distribute import make_distributor

        workers = self._workers()
        with make_distributor(self.run.engine, workers, self.run.ray_address) as dist, \
                (blas_threads(1) if not self._remote else nullcontext()):
            threads = _Threads(share, workers, self._remote)
            run = _collect(dist, units, plan, threads)
            run.merged = _merge(run.sources, budget, threads)
        run.restarts = sum(g.restarts for g in run.sources.values())
        run.extensions = sum(g.extensions for g in run.sources.values())
        for g in run.sources.values():
            g.release()
        return run


def start_grouping(parts: PartFiles, workers: int, copy: bool | None = None, map_parts: bool = True) -> PartsScan:
    """Start the class-major pass over the parts (see ``PartsScan``): ``copy`` forces or forbids the
    class-major copy (None: when the corpus is large against the available memory)."""
    sources = [(NpyPart.open(img), NpyPart.open(txt), first) for img, txt, first in zip(parts.img, parts.txt, parts.firsts)]
    return PartsScan(sources, workers=workers, copy=copy, map_parts=map_parts).start()


@dataclass(frozen=True)
class _Block:
    k: int
    rows: np.ndarray  # example indices of the class' valid rows, ascending
    keep: np.ndarray  # the valid mask over the class' grouped rows
    perm: np.ndarray | None  # the rows as read, permuted into key order (None: already in key order)


@dataclass(frozen=True)
class _Plan:
    """What the units are built from: the grouped rows, the valid rows, the key order."""

    grouped: GroupedRows
    labels: np.ndarray  # (n,) int64
    label_sim: np.ndarray
    n_valid: int
    forced: np.ndarray | None  # (n,) bool: rows the greedy starts with (select --keep)
    by_key: np.ndarray  # example indices in key order: ties break by key
    rank: np.ndarray  # each example's key rank
    blocks: tuple[_Block, ...]
    index_of: dict  # class -> its valid rows' example indices in key order


def _plan(embeddings: EmbeddingSet, grouped: GroupedRows, kept: np.ndarray | None) -> _Plan:
    valid = np.asarray(embeddings.valid) & grouped.valid
    forced = None
    if kept is not None:
        if not valid[kept].all():
            raise ClipcovError(f"{int((~valid[kept]).sum())} kept row(s) have no valid embedding (NaN or zero)")
        forced = np.zeros(embeddings.n, bool)
        forced[kept] = True
    by_key = key_order(embeddings.keys)
    rank = np.empty(embeddings.n, np.int64)
    rank[by_key] = np.arange(embeddings.n, dtype=np.int64)
    blocks = []
    for k in range(len(grouped.starts) - 1):
        s, e = int(grouped.starts[k]), int(grouped.starts[k + 1])
        if e > s:
            rows = grouped.order[s:e]
            keep = valid[rows]
            if keep.any():
                blocks.append(_Block(k, rows[keep], keep, _key_permutation(rank[rows[keep]])))
    index_of = {b.k: b.rows if b.perm is None else b.rows[b.perm] for b in blocks}
    return _Plan(grouped, np.asarray(embeddings.pseudo_label).astype(np.int64), np.asarray(embeddings.label_sim),
                 int(valid.sum()), forced, by_key, rank, tuple(blocks), index_of)


@dataclass
class _Run:
    """What the units and the merge gave (filled as they run)."""

    sources: dict = field(default_factory=dict)  # class -> _ClassSequence
    cols: dict = field(default_factory=dict)  # r, e, l, c, a of every row (NaN where not computed)
    stats: list = field(default_factory=list)  # each unit's kernel counters
    unit_seconds: list = field(default_factory=list)
    t_units: float = 0.0
    merged: object = None
    restarts: int = 0
    extensions: int = 0


class _Threads:
    """The local workers' torch threads: one each while classes run side by side, all of them once a
    single unit (or the merge) is left: torch's int8 products use them all (measured 2-2.5x on 2 cores);
    a worker applies it before its next batch, this thread for the merge."""

    def __init__(self, share: ThreadShare, workers: int, remote: bool) -> None:
        self.share, self.workers, self.remote = share, workers, remote

    def left(self, units: int) -> None:
        if not self.remote and self.workers > 1 and units == 1:
            self.share.n = self.workers
            set_torch_threads(self.workers)


def _collect(dist, units: list[ClassUnit], plan: _Plan, threads: _Threads) -> _Run:
    """Run the units; record every row's terms (O(n), for the output and summary) and each class' sequence."""
    def rerun(unit: ClassUnit) -> ClassResult:
        return next(iter(dist.imap_unordered(run_class_unit, [unit])))[1]

    run = _Run(cols={name: np.full(len(plan.labels), np.nan) for name in ("r", "e", "l", "c", "a")})
    threads.left(len(units))
    for done, (i, res) in enumerate(dist.imap_unordered(run_class_unit, units), 1):
        threads.left(len(units) - done)
        rows = plan.index_of[res.k]
        for name in run.cols:
            run.cols[name][rows] = getattr(res, name)
        run.sources[res.k] = _ClassSequence(units[i], res, plan.rank[rows], rerun)  # ties: key rank
        run.stats.append(res.stats)
        run.unit_seconds.append(res.seconds)
    run.t_units = time.perf_counter()
    return run


def _merge(sources: dict, budget: int, threads: _Threads):
    """The classes' sequences merged by gain (``greedy.merge_sequences``); a merge round's extensions
    run on the workers when there are several."""
    share, workers = threads.share, threads.workers

    def extend_many(items: list) -> None:
        if len(items) < 2 or workers < 2:
            for g, count in items:
                g.extend(count)
            return
        share.n = 1  # one torch thread per class while classes run side by side
        try:
            with ThreadPoolExecutor(min(workers, len(items))) as pool:
                list(pool.map(lambda item: item[0].extend(item[1]), items))
        finally:
            share.n = workers

    return merge_sequences(dict(sorted(sources.items())), budget, chunk_of=lambda g: g.chunk(), extend_many=extend_many)


def _profile_run(run: _Run, t0: float, stateful: int) -> None:
    profile(f"units {run.t_units - t0:.2f} s, merge {time.perf_counter() - run.t_units:.2f} s ({run.restarts} restarts, "
            f"{run.extensions} in-place extensions of {stateful} large classes); units' own time: largest "
            f"{max(run.unit_seconds, default=0):.2f} s, sum {sum(run.unit_seconds):.2f} s; "
            f"kernel counters {np.sum(run.stats, axis=0).tolist() if run.stats else []}")


def _key_permutation(ranks: np.ndarray) -> np.ndarray | None:
    """The permutation putting rows of these key ranks in ascending key order; None when they already are."""
    if len(ranks) < 2 or bool(np.all(ranks[1:] > ranks[:-1])):
        return None
    return np.argsort(ranks, kind="stable")


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - only a warm-up: the same code runs (and reports) in the units
        pass
