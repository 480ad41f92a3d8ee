"""ClipCov's class sequences from the units to the merge: the units run through a distributor
(``collect``: every row's terms and each class' sequence), then the sequences are merged by gain
(``merge``, on ``greedy.merge_sequences``), a class extended in place or re-run when the merge needs
more of it (``ClassSequence``); the local workers' torch threads follow how many units are left
(``TorchThreads``)."""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from clipcov_cli.select.clipcov.greedy import merge_sequences
from clipcov_cli.select.clipcov.imatmul import ThreadShare, set_torch_threads
from clipcov_cli.select.clipcov.plan import Plan
from clipcov_cli.select.clipcov.units import ClassResult, ClassUnit, run_class_unit


class ClassSequence:
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


@dataclass
class Run:
    """What the units and the merge gave (filled as they run)."""

    sources: dict = field(default_factory=dict)  # class -> ClassSequence
    cols: dict = field(default_factory=dict)  # r, e, l, c, a of every row (NaN where not computed)
    stats: list = field(default_factory=list)  # each unit's kernel counters
    unit_seconds: list = field(default_factory=list)
    t_units: float = 0.0
    merged: object = None
    restarts: int = 0
    extensions: int = 0


class TorchThreads:
    """The local workers' torch threads: one each while classes run side by side, all of them once a
    single unit (or the merge) is left: torch's int8 products use them all (measured 2-2.5x on 2 cores);
    a worker applies it before its next batch, this thread for the merge."""

    def __init__(self, share: ThreadShare, workers: int, remote: bool) -> None:
        self.share, self.workers, self.remote = share, workers, remote

    def left(self, units: int) -> None:
        if not self.remote and self.workers > 1 and units == 1:
            self.share.n = self.workers
            set_torch_threads(self.workers)


def collect(dist, units: list[ClassUnit], plan: Plan, threads: TorchThreads) -> Run:
    """Run the units; record every row's terms (O(n), for the output and summary) and each class' sequence."""
    def rerun(unit: ClassUnit) -> ClassResult:
        return next(iter(dist.imap_unordered(run_class_unit, [unit])))[1]

    run = Run(cols={name: np.full(len(plan.labels), np.nan) for name in ("r", "e", "l", "c", "a")})
    threads.left(len(units))
    for done, (i, res) in enumerate(dist.imap_unordered(run_class_unit, units), 1):
        threads.left(len(units) - done)
        rows = plan.index_of[res.k]
        for name in run.cols:
            run.cols[name][rows] = getattr(res, name)
        run.sources[res.k] = ClassSequence(units[i], res, plan.rank[rows], rerun)  # ties: key rank
        run.stats.append(res.stats)
        run.unit_seconds.append(res.seconds)
    run.t_units = time.perf_counter()
    return run


def merge(sources: dict, budget: int, threads: TorchThreads):
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
