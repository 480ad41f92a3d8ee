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
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np

from clipcov_cli.errors import ClipcovError
from clipcov_cli.select.base import EmbeddingSet, Selection, Selector
from clipcov_cli.select.clipcov.blas import blas_threads
from clipcov_cli.select.clipcov.greedy import merge_sequences
from clipcov_cli.select.clipcov.lazy_kernel import stat as kernel_stat
from clipcov_cli.select.clipcov.imatmul import ThreadShare, backend, set_torch_threads
from clipcov_cli.select.clipcov.scan import GroupedRows, RowBuffers, close_maps, group_from_arrays
from clipcov_cli.select.clipcov.units import ClassResult, ClassUnit, GroupedSource, PartsSource, run_class_unit, warm_up
from clipcov_cli.select.methods._common import key_order
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
    for k, rows, _ in sorted(blocks, key=lambda b: -len(b[1])):
        need = len(rows) * d * 2 * 2 * 1.5
        if len(rows) < STATE_MIN_ROWS or used + need > budget:
            break
        out.add(k)
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
    name: ClassVar[str] = "clipcov"
    alpha: float = 2.0
    beta: float = 0.5
    gamma: float = 1.0
    tau: float = 0.0
    r_mode: str = "auto"
    engine: str = "local"  # where the per-class units run (not a parameter of the method: same result)
    workers: int | None = None  # local threads (default: the CPU count)
    ray_address: str | None = None
    notes: list = field(default_factory=list, compare=False, repr=False)
    warming: list = field(default_factory=list, compare=False, repr=False)  # the warm-up thread, if started
    stats: list = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.r_mode not in R_MODES:
            raise ClipcovError(f"unknown --r-mode {self.r_mode!r}: use one of {', '.join(R_MODES)}")

    def params(self) -> dict:
        return {"alpha": self.alpha, "beta": self.beta, "gamma": self.gamma, "tau": self.tau, "r_mode": self.r_mode}

    def warm_up(self) -> None:
        """torch and the compiled kernels load in a background thread (about 2 s) while the caller
        reads the corpus; a failure there is left for the real units to report."""
        if self.engine == "local":
            thread = threading.Thread(target=_quietly, args=(warm_up,), name="clipcov-warm-up", daemon=True)
            thread.start()
            self.warming.append(thread)

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
        return Selection(indices=sel.indices, score=score, terms=sel.terms, all_scores=sel.all_scores)

    def force_offset(self) -> float:
        """Above every possible gain difference: |a_j| <= 2 + |alpha| + |beta| + 2|gamma| and a redundancy
        term is within [-2, 2]; a power of two, so that adding it and taking it back off loses little."""
        spread = 2 * (2 + abs(self.alpha) + abs(self.beta) + 2 * abs(self.gamma)) + 4
        return float(2.0 ** math.ceil(math.log2(16 * spread)))

    def _select(self, embeddings: EmbeddingSet, budget: int, kept: np.ndarray | None) -> Selection:
        if embeddings.pseudo_label is None or embeddings.label_sim is None:
            raise ClipcovError("ClipCov needs pseudo-labels: run `clipcov embed --relabel` on the embeddings folder first")
        from clipcov_cli.distribute import make_distributor

        t0 = time.perf_counter()
        self.notes.clear()  # one call's notes and counters (the selector may be reused)
        self.stats.clear()
        labels_all = np.asarray(embeddings.pseudo_label).astype(np.int64)
        grouped = embeddings.prepared if isinstance(embeddings.prepared, GroupedRows) else None
        if grouped is None:  # a caller holding arrays: the same pass, in memory
            grouped = group_from_arrays(embeddings.img, embeddings.txt, labels_all, int(labels_all.max()) + 1,
                                        workers=self._workers())
        valid_all = np.asarray(embeddings.valid) & grouped.valid
        n_valid = int(valid_all.sum())
        forced_all = None  # select --keep: rows the greedy starts with
        if kept is not None:
            if not valid_all[kept].all():
                raise ClipcovError(f"{int((~valid_all[kept]).sum())} kept row(s) have no valid embedding (NaN or zero)")
            forced_all = np.zeros(embeddings.n, bool)
            forced_all[kept] = True
        label_sim = np.asarray(embeddings.label_sim)
        by_key = key_order(embeddings.keys)  # example indices in key order: ties break by key
        rank = np.empty(embeddings.n, np.int64)
        rank[by_key] = np.arange(embeddings.n, dtype=np.int64)
        blocks = []  # (k, example indices of valid rows ascending, keep mask over the block)
        for k in range(len(grouped.starts) - 1):
            s, e = int(grouped.starts[k]), int(grouped.starts[k + 1])
            if e > s:
                rows = grouped.order[s:e]
                keep = valid_all[rows]
                if keep.any():
                    blocks.append((k, rows[keep], keep))
        # each class' rows in key order: the permutation of the rows as read (None: already in key order)
        perms = {k: _key_permutation(rank[rows]) for k, rows, _ in blocks}
        sizes = np.array([len(rows) for _, rows, _ in blocks], np.int64)
        r_mode = resolve_r_mode(self.r_mode, self.tau, sizes, embeddings.d)
        self.notes.append(f"r computed with the '{r_mode}' method")
        remote = self.engine != "local"
        if remote and not grouped.parts:
            raise ClipcovError("--engine ray reads the rows from the embeddings folder's parts: open it from a folder")

        units = []
        stateful = set() if remote else _stateful_classes(blocks, embeddings.d)
        buffers = RowBuffers()  # the local workers' reused row buffers (for this selection only)
        share = ThreadShare(1)  # torch threads of the local workers (one each until a single unit is left)
        for k, rows, keep in blocks:
            factor = STATE_QUOTA_FACTOR if k in stateful else QUOTA_FACTOR
            by_key_k = rows if perms[k] is None else rows[perms[k]]
            forced = np.flatnonzero(forced_all[by_key_k]) if forced_all is not None else None  # key-order positions
            quota = min(len(rows), math.ceil(factor * budget * len(rows) / n_valid) + 16 + len(forced if forced is not None else ()))
            source = PartsSource(grouped.parts, rows) if remote else \
                GroupedSource(grouped, k, keep, None if k in stateful else buffers)  # a kept state keeps its rows
            units.append(ClassUnit(k, quota, self.alpha, self.beta, self.gamma, self.tau, r_mode, grouped.sum_v,
                                   grouped.sum_t, n_valid, label_sim[by_key_k].astype(np.float32), source,
                                   keep_state=k in stateful, threads=ThreadShare(1) if remote else share,
                                   forced=forced if forced is not None and len(forced) else None,
                                   force=self.force_offset(), order=perms[k]))
        units.sort(key=lambda u: -len(u.label_sim))  # largest first: the longest unit starts first
        index_of = {k: rows if perms[k] is None else rows[perms[k]] for k, rows, _ in blocks}  # in key order
        cols = {name: np.full(embeddings.n, np.nan) for name in ("r", "e", "l", "c", "a")}
        workers = self._workers()
        # local threads: one BLAS / torch thread each (the classes are the parallelism; a multi-threaded BLAS
        # on the kernel's small products is several times slower); Ray tasks get 1 CPU each
        try:
            with make_distributor(self.engine, workers, self.ray_address) as dist, \
                    (blas_threads(1) if not remote else nullcontext()):
                def rerun(unit: ClassUnit) -> ClassResult:
                    return next(iter(dist.imap_unordered(run_class_unit, [unit])))[1]

                sources = {}
                unit_seconds: list[float] = []
                def one_left(left: int) -> None:
                    if not remote and workers > 1 and left == 1:
                        # the last unit and the merge have the CPUs to themselves: torch's int8
                        # products use them all (measured 2-2.5x on 2 cores); the worker applies it
                        # before its next batch, this thread for the merge
                        share.n = workers
                        set_torch_threads(workers)

                one_left(len(units))
                for done, (i, res) in enumerate(dist.imap_unordered(run_class_unit, units), 1):
                    one_left(len(units) - done)
                    rows = index_of[res.k]
                    for name in cols:  # O(n) record of every row's terms, for the output and summary
                        cols[name][rows] = getattr(res, name)
                    sources[res.k] = _ClassSequence(units[i], res, rank[rows], rerun)  # ties: key rank
                    self.stats.append(res.stats)
                    unit_seconds.append(res.seconds)
                t_units = time.perf_counter()

                def extend_many(items: list) -> None:
                    """One merge round's extensions, on the workers when there are several."""
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

                merged = merge_sequences(dict(sorted(sources.items())), budget, chunk_of=lambda g: g.chunk(),
                                         extend_many=extend_many)
        finally:
            close_maps()  # also when a unit failed: no memory map outlives the selection
            for thread in self.warming:  # not left compiling while the interpreter exits
                thread.join(timeout=60)
            self.warming.clear()
        if any(kernel_stat(s, "batches") > 0 for s in self.stats):  # some class screened batches
            self.notes.append(f"int8 screening products: {backend()}")  # torch-int8, or the slower blas-float
        restarts = sum(g.restarts for g in sources.values())
        extensions = sum(g.extensions for g in sources.values())
        for g in sources.values():
            g.release()
        profile(f"units {t_units - t0:.2f} s, merge {time.perf_counter() - t_units:.2f} s ({restarts} restarts, "
                 f"{extensions} in-place extensions of {len(stateful)} large classes); units' own time: largest "
                 f"{max(unit_seconds, default=0):.2f} s, sum {sum(unit_seconds):.2f} s; "
                 f"kernel counters {np.sum(self.stats, axis=0).tolist() if self.stats else []}")
        self.stats.append(np.array([restarts], np.int64))
        idx = by_key[merged.index]  # the merge's index is the key rank
        terms_out = {"class": labels_all[idx]}
        terms_out.update({name: arr[idx] for name, arr in cols.items()})
        return Selection(indices=idx, score=merged.gain, terms=terms_out, all_scores=cols["a"])

    def _workers(self) -> int:
        return worker_count(self.workers)


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
