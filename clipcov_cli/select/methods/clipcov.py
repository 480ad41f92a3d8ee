"""ClipCov: the exact greedy of the spec, class by class. This module is the wiring of the
``select/clipcov/`` package behind the ``Selector`` interface: parameters, hooks, units, engine.

One pass over the embeddings (``clipcov/scan.py``) flags invalid rows, sums the corpus and puts the
rows in class-major order (``clipcov/sources.py``: where the rows are read from); each class with
valid rows (``clipcov/plan.py``) is then a unit of work (``clipcov/units.py``: its terms and its
greedy sequence) run through the distributor seam (local threads or Ray tasks), and the per-class
sequences are merged by gain (``clipcov/merge.py``, ``clipcov/greedy.py``). Never materializes an
n_k x n_k matrix (exact thresholded r is computed in row blocks); memory is O(n) plus the classes in flight.

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
from contextlib import nullcontext
from dataclasses import InitVar, dataclass, field, replace
from typing import Callable, ClassVar, ContextManager

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, PartFiles, Preparation, RunSettings, Selection, Selector
from clipcov_cli.select.clipcov.blas import blas_threads
from clipcov_cli.select.clipcov.kernel_state import stat as kernel_stat
from clipcov_cli.select.clipcov.imatmul import ThreadShare, backend
from clipcov_cli.select.clipcov.merge import Run, TorchThreads, collect, merge
from clipcov_cli.select.clipcov.plan import Plan, plan_classes
from clipcov_cli.select.clipcov.parts import NpyPart, RowBuffers
from clipcov_cli.select.clipcov.scan import PartsScan, group_from_arrays, load_compiled
from clipcov_cli.select.clipcov.sources import GroupedRows
from clipcov_cli.select.clipcov.units import ClassUnit, GroupedSource, PartsSource
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
        it (not left compiling while the interpreter exits). The reading pass' own compiled functions
        load first, here: loading them beside the thread's imports would hold up the pass."""
        if self._remote:
            return None
        load_compiled()
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
            plan = plan_classes(embeddings, grouped, kept)
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

    def _units(self, plan: Plan, budget: int, r_mode: str, stateful: set[int], share: ThreadShare) -> list[ClassUnit]:
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

    def _run(self, units: list[ClassUnit], plan: Plan, budget: int, share: ThreadShare) -> Run:
        """The units through the distributor, then the merge of their sequences by gain. Local threads
        get one BLAS / torch thread each (the classes are the parallelism; a multi-threaded BLAS on the
        kernel's small products is several times slower); Ray tasks get 1 CPU each."""
        from clipcov_cli.distribute import make_distributor

        workers = self._workers()
        with make_distributor(self.run.engine, workers, self.run.ray_address) as dist, \
                (blas_threads(1) if not self._remote else nullcontext()):
            threads = TorchThreads(share, workers, self._remote)
            run = collect(dist, units, plan, threads)
            run.merged = merge(run.sources, budget, threads)
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


def _profile_run(run: Run, t0: float, stateful: int) -> None:
    profile(f"units {run.t_units - t0:.2f} s, merge {time.perf_counter() - run.t_units:.2f} s ({run.restarts} restarts, "
            f"{run.extensions} in-place extensions of {stateful} large classes); units' own time: largest "
            f"{max(run.unit_seconds, default=0):.2f} s, sum {sum(run.unit_seconds):.2f} s; "
            f"kernel counters {np.sum(run.stats, axis=0).tolist() if run.stats else []}")


def _quietly(fn: Callable[[], object]) -> None:
    try:
        fn()
    except Exception:  # noqa: BLE001 - only a warm-up: the same code runs (and reports) in the units
        pass
